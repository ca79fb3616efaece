"""Compact models of users' own module classes, rebuilt from an importable builder: never unpickled.

A compact model file holds a recipe (builder, name, keyword arguments, removed channels) and weights.
For a model chex-tune does not know, the builder is the registered name ``"import"`` and the name is a
reference ``"package.module:function"`` (any callable that returns the dense model, a class too), so

    ChannelExplorer(model, x, builder=make_net, builder_kwargs={"width": 32}, ...)   # or "my_models:make_net"
    ChexReporter(model, x, config, builder="my_models:make_net", builder_kwargs={"width": 32}, ...)

saves a ``compact.pt`` that ``chex_tune.load_compact`` rebuilds in any process where ``my_models`` is
importable (an installed package, or a directory on ``PYTHONPATH``); ``load_compact`` finds the
``"import"`` builder by itself (``compact.BUILDER_REFERENCES``). Keyword arguments must be plain data
(they are stored with the weights and read back with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from chex_tune.core.compact import builder_names, prune_copy

IMPORT_BUILDER = "import"
PLAIN_TYPES = (str, int, float, bool, type(None))


class BuilderImportError(ValueError):
    """A builder reference that cannot be imported or called here."""


def builder_reference(builder: str | Callable[..., nn.Module]) -> str:
    """``"package.module:function"`` for a callable (or a reference, checked for form), as other processes import it.

    A function defined in a script run as ``python path/script.py`` lives in ``__main__``, which other
    processes cannot import; its reference uses the script's module name (``script:function``), which
    works wherever the script's directory is importable (Ray workers get the driver's script directory).
    """
    if isinstance(builder, str):
        module, sep, attribute = builder.partition(":")
        if not (sep and module and attribute) or not all(part.isidentifier() for part in module.split(".")):
            raise BuilderImportError(f"builder {builder!r} must look like 'package.module:function' (an importable "
                                     "module, a colon, then a function or class in it)")
        return builder
    if not callable(builder):
        raise BuilderImportError(f"builder must be a 'package.module:function' reference or a function, "
                                 f"got {builder!r}")
    module = getattr(builder, "__module__", None)
    qualname = getattr(builder, "__qualname__", "")
    if not module or "<" in qualname:
        raise BuilderImportError(f"builder {builder!r} is not importable by name (a lambda or a nested function); "
                                 "define it at the top level of a module")
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file is None:
            raise BuilderImportError(f"builder {qualname} is defined interactively (__main__ has no file), so no other "
                                     "process can import it; move it into a module and pass 'module:function'")
        module = Path(main_file).stem
    return f"{module}:{qualname}"


def resolve_builder(reference: str) -> Callable[..., nn.Module]:
    """The callable a reference names; a clear error naming the reference when it cannot be imported."""
    reference = builder_reference(reference)
    module_name, _, attribute = reference.partition(":")
    try:
        target = _main_as(module_name) or importlib.import_module(module_name)
    except ImportError as exc:
        raise BuilderImportError(
            f"cannot import model builder {reference!r}: {type(exc).__name__}: {exc}. Make module {module_name!r} "
            "importable here (pip install the package that holds it, or add its directory to PYTHONPATH)") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise BuilderImportError(f"cannot import model builder {reference!r}: module {module_name!r} has no "
                                     f"attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise BuilderImportError(f"model builder {reference!r} is not callable (got {type(target).__name__})")
    return target


def _main_as(module_name: str):
    """The running script's module where ``module_name`` names it (``builder_reference`` spells a ``__main__``
    function so): importing the script by that name would run it a second time, inside this call."""
    if module_name in sys.modules:
        return None
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    return main if main_file and Path(main_file).stem == module_name else None


def build_from_reference(reference: str, **kwargs) -> nn.Module:
    """The registered ``"import"`` builder: import ``reference`` and call it with ``kwargs``."""
    model = resolve_builder(reference)(**kwargs)
    if not isinstance(model, nn.Module):
        raise BuilderImportError(f"model builder {reference!r} returned {type(model).__name__}, not an nn.Module")
    return model


def check_plain(value, where: str) -> None:
    """Builder arguments are stored as plain data: text, numbers, booleans, None, lists and dicts of them."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be text, got {key!r}")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            check_plain(item, f"{where}[{n}]")
    elif not isinstance(value, PLAIN_TYPES):
        raise ValueError(f"{where} must be plain data (text, numbers, booleans, None, lists, dicts) so the compact "
                         f"model loads without pickle; got {type(value).__name__} {value!r}")


def check_rebuilds(model: nn.Module, reference: str, kwargs: dict, *,
                   build: Callable[..., nn.Module] | None = None) -> None:
    """Build the model from its reference now and compare parameter shapes, so a wrong builder fails before training.

    ``build``: call this instead of importing ``reference`` (a function of a script run as ``__main__``: importing
    the script by name would run it a second time, inside this call).
    """
    check_plain(kwargs, "builder_kwargs")
    try:
        rebuilt = build_from_reference(reference, **kwargs) if build is None else build(**kwargs)
        if not isinstance(rebuilt, nn.Module):
            raise BuilderImportError(f"model builder {reference!r} returned {type(rebuilt).__name__}, not an nn.Module")
    except BuilderImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the user's builder is reported as such
        raise ValueError(f"builder {reference!r} failed with builder_kwargs {kwargs}: "
                         f"{type(exc).__name__}: {exc}") from exc
    earlier = getattr(model, "chex_recipe", None)
    if earlier is not None:  # a compact model compressed again: the builder gives its dense model, less what it lost
        rebuilt = prune_copy(rebuilt.eval(), earlier["removed"], torch.zeros(earlier["input_shape"]))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if expected != got:
        differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        shown = ", ".join(f"{k}: {expected.get(k, 'missing')} vs {got.get(k, 'missing')}" for k in differ[:3])
        compact = "" if earlier is None else (
            f"; this {type(model).__name__} is a compact model whose recipe names the dense model "
            f"{earlier['model_name']!r} with {earlier['model_kwargs']}: give that dense model's builder and "
            "arguments, or no builder (the recipe carries over)")
        raise ValueError(f"builder {reference!r} with builder_kwargs {kwargs} builds a different model than the one "
                         f"given ({len(differ)} tensors differ: {shown}); pass the arguments that rebuild it{compact}")


def recipe_args(model: nn.Module, *, builder=None, builder_kwargs: Mapping | None = None,
                model_name: str | None = None, model_kwargs: Mapping | None = None) -> dict:
    """How ``load_compact`` rebuilds ``model``: ``make_recipe``'s builder, model_name and model_kwargs.

    ``builder`` is a function or ``"package.module:function"`` with ``builder_kwargs`` (checked now by
    building the model once), or, as saved recipes spell it, a registered builder name (``"timm"``,
    ``"import"``, ...) with ``model_name``/``model_kwargs``; timm models need neither.
    """
    if builder is not None and (not isinstance(builder, str) or ":" in builder):
        given = "model_name" if model_name is not None else "model_kwargs" if model_kwargs is not None else None
        if given:
            raise ValueError(f"builder {builder!r} is a function or 'package.module:function': pass its arguments "
                             f"as builder_kwargs=, not {given}= (model_name/model_kwargs go with a timm model "
                             "name or a registered builder name)")
        reference, kwargs = builder_reference(builder), dict(builder_kwargs or {})
        in_main = callable(builder) and getattr(builder, "__module__", None) == "__main__"
        check_rebuilds(model, reference, kwargs, build=builder if in_main else None)
        return {"builder": IMPORT_BUILDER, "model_name": reference, "model_kwargs": kwargs}
    if builder_kwargs:
        raise ValueError(f"builder_kwargs= needs builder= as a function or 'package.module:function' that builds "
                         f"the model, got builder={builder!r}")
    if builder is not None and builder not in builder_names():
        raise ValueError(f"unknown builder {builder!r}: pass a function or 'package.module:function' that builds "
                         f"the model (with builder_kwargs=), or a registered builder name {builder_names()} "
                         "with model_name=")
    is_timm = bool((getattr(model, "pretrained_cfg", None) or {}).get("architecture"))
    if builder is not None and model_name is None and (builder == IMPORT_BUILDER or not is_timm):
        raise ValueError(f"builder {builder!r} needs model_name= (for 'import': the 'package.module:function' "
                         f"reference); or pass builder= as a function or 'package.module:function' that builds "
                         f"this {type(model).__name__}, with builder_kwargs=")
    if builder == IMPORT_BUILDER:
        builder_reference(model_name)  # the reference's form, checked now rather than at load time
    return {"builder": builder, "model_name": model_name, "model_kwargs": model_kwargs}
