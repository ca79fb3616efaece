"""Physical compaction: a new, smaller dense model that computes what the masked one does.

torch-pruning removes the masked channels from a copy of the model. The same removal replays on load:
a saved compact model is the recipe that built the dense model (builder, name, kwargs), the input
shape, the removed channels per group and the weights, all plain data read with
``torch.load(weights_only=True)``. No pickled module ever touches the disk.

``find_inexact_groups`` is how the engine stays honest beyond what the dependency graph handles:
it masks random channels of every group on a copy, compacts, and compares outputs; groups whose
compaction fails or changes the output are found by bisection and left unpruned.
"""

from __future__ import annotations

import copy
import importlib
import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

from chex_tune.core._atomic import atomic_torch_save
from chex_tune.core.errors import UserError, torch_load
from chex_tune.core.groups import ChannelGroup, build_dependency_graph
from chex_tune.core.masks import MaskState
from chex_tune.core.stems import SMALL_STEM_BUILDER, build_small_stem

FORMAT = "chex_tune.compact/1"
RECIPE_KEYS = ("builder", "model_name", "model_kwargs", "input_shape", "removed")
# Builders turn (name, kwargs) back into the dense model at load time. Plain functions by name, so a
# saved file never stores code. Other packages register their own with ``register_builder``.
BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# Core's own builder that lives in a module importing this one, found by reference when a recipe first
# names it: ``load_compact`` works without the caller importing that module first. Only modules of core:
# core imports nothing above it, not even by name. The names are part of the file format: recipes hold them.
BUILDER_REFERENCES = {
    "import": "chex_tune.core.builders:build_from_reference",  # users' own "package.module:function"
}


def register_builder(name: str, build: Callable[..., nn.Module]) -> None:
    BUILDERS[name] = build


def builder_names() -> list[str]:
    """Every builder name a recipe may hold: registered ones and the package's own."""
    return sorted(BUILDERS.keys() | BUILDER_REFERENCES.keys())


def get_builder(name: str, *, source: str = "the recipe") -> Callable[..., nn.Module]:
    """The builder registered as ``name``, importing the package's own on first use."""
    if name not in BUILDERS and name in BUILDER_REFERENCES:
        module, _, attribute = BUILDER_REFERENCES[name].partition(":")
        register_builder(name, getattr(importlib.import_module(module), attribute))
    if name not in BUILDERS:
        raise ValueError(f"{source} needs model builder {name!r}; known builders: {builder_names()} "
                         f"(import the package that registers it first)")
    return BUILDERS[name]


def _build_timm(model_name: str, **kwargs) -> nn.Module:
    import timm

    return timm.create_model(model_name, pretrained=False, **kwargs)


register_builder("timm", _build_timm)
register_builder(SMALL_STEM_BUILDER, build_small_stem)  # timm with the small-input stem (core.stems)


def removed_channels(groups: list[ChannelGroup], masks: list[torch.Tensor]) -> dict[str, list[int]]:
    """Root-layer channel indices to remove, per group name (only groups that lose channels)."""
    removed = {}
    for group, mask in zip(groups, masks):
        channels = (~group.channel_mask(mask)).nonzero().flatten().tolist()
        if channels:
            removed[group.name] = channels
    return removed


def compose_removed(earlier: dict[str, list[int]], now: dict[str, list[int]], model: nn.Module) -> dict[str, list[int]]:
    """What a compact ``model`` (which lost ``earlier``, in dense indices) loses with ``now`` (its own indices), in
    dense indices: compacting a compact model again stays one recipe, replayed on the dense model in one pass."""
    out = {name: list(channels) for name, channels in earlier.items()}
    for name, channels in now.items():
        gone = set(earlier.get(name, ()))
        dense = model.get_submodule(name).out_channels + len(gone)
        kept = [c for c in range(dense) if c not in gone]
        out[name] = sorted(gone | {kept[i] for i in channels})
    return out


def prune_copy(model: nn.Module, removed: dict[str, list[int]], example_inputs) -> nn.Module:
    """A deep copy of ``model`` with ``removed`` channels physically taken out."""
    small = copy.deepcopy(model)
    small.__dict__.pop("chex_recipe", None)  # the copy's recipe describes ``model``, not what this returns
    if not removed:
        return small
    graph = build_dependency_graph(small, example_inputs)  # no time limit: this graph built before
    for name, channels in removed.items():
        layer = small.get_submodule(name)
        handler = graph.get_pruner_of_module(layer).prune_out_channels
        graph.get_pruning_group(layer, handler, idxs=channels).prune()
    return small


@torch.no_grad()
def max_output_difference(masked: nn.Module, small: nn.Module, example_inputs, *,
                          dtype: torch.dtype | None = torch.float64) -> float:
    """Relative max |difference| of eval outputs (``inf`` if shapes differ).

    Compared in float64 by default, on copies: the question is whether the two models compute the
    same function. In float32, summing over zeroed channels or without them rounds differently, and
    deep nets with large activations amplify that to 1e-2 relative even where float64 agrees exactly
    (EfficientNet after a few noisy updates); pass ``dtype=None`` to compare as the models are.
    """
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if dtype is not None:
        masked, small = copy.deepcopy(masked).to(dtype), copy.deepcopy(small).to(dtype)
        inputs = tuple(t.to(dtype) if torch.is_floating_point(t) else t for t in inputs)
    modes = masked.training, small.training
    masked.eval(), small.eval()
    try:
        a, b = small(*inputs), masked(*inputs)
    finally:
        masked.train(modes[0]), small.train(modes[1])
    if a.shape != b.shape:
        return float("inf")
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _randomize_norm_statistics(model: nn.Module, generator: torch.Generator) -> None:
    """Make every norm layer non-trivial, so a wrong compaction cannot hide behind init values."""
    for layer in model.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.affine:
            with torch.no_grad():
                for tensor in (layer.weight, layer.bias):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                if layer.track_running_stats:
                    layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=generator) * 0.1)
                    layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=generator) + 0.5)


def find_inexact_groups(model: nn.Module, groups: list[ChannelGroup], example_inputs, *,
                        tolerance: float = 1e-6, seed: int = 0) -> dict[str, str]:
    """Group name -> why masking it is not equivalent to removing it (empty when all are exact)."""
    generator = torch.Generator().manual_seed(seed)
    probe = copy.deepcopy(model).double().eval()  # float64: rounding cannot pass for a wrong group
    example_inputs = _to_double(example_inputs)
    _randomize_norm_statistics(probe, generator)
    candidates = [g for g in groups if g.prunable]
    masks = {}
    for group in candidates:  # drop about a third of each group's units, never all
        mask = torch.rand(group.units, generator=generator) > 0.35
        mask[torch.randint(group.units, (1,), generator=generator)] = True
        masks[group.name] = mask

    def failure(subset: list[ChannelGroup]) -> str | None:
        state = MaskState(copy.deepcopy(probe), subset)
        state.set_masks([masks[g.name] for g in subset])
        state.apply()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                small = prune_copy(state.model, removed_channels(subset, state.masks), example_inputs)
                difference = max_output_difference(state.model, small, example_inputs, dtype=None)
        except Exception as exc:  # noqa: BLE001 - any failure means "do not prune this"
            return f"compaction failed: {type(exc).__name__}: {str(exc)[:120]}"
        if difference > tolerance:
            return f"masked and compacted outputs differ (relative {difference:.1e})"
        return None

    inexact: dict[str, str] = {}

    def bisect(subset: list[ChannelGroup]) -> None:
        if not subset:
            return
        reason = failure(subset)
        if reason is None:
            return
        if len(subset) == 1:
            inexact[subset[0].name] = reason
            return
        half = len(subset) // 2
        bisect(subset[:half])
        bisect(subset[half:])

    bisect(candidates)
    # Groups can be exact alone and wrong together (e.g. two slices of one concat); check the union.
    remaining = [g for g in candidates if g.name not in inexact]
    while remaining and (reason := failure(remaining)) is not None:
        inexact[remaining[-1].name] = f"interacts with another group: {reason}"
        remaining.pop()
    return inexact


def _to_double(example_inputs):
    if isinstance(example_inputs, (tuple, list)):
        return type(example_inputs)(_to_double(t) for t in example_inputs)
    return example_inputs.double() if torch.is_floating_point(example_inputs) else example_inputs


# ---------------------------------------------------------------------------------- save and load
def save_compact(small: nn.Module, path: str | os.PathLike) -> None:
    """Write a model returned by ``ChannelExplorer.compact()`` (recipe + weights, no pickle)."""
    recipe = getattr(small, "chex_recipe", None)
    if recipe is None:
        raise ValueError(f"save_compact needs a model returned by ChannelExplorer.compact() that knows how to "
                         f"rebuild its dense model; this {type(small).__name__} carries no recipe. For a model not "
                         "from timm, give ChannelExplorer builder= (a function or 'package.module:function' that "
                         "builds the dense model) and builder_kwargs= (its keyword arguments)")
    state = small.state_dict()
    check_recipe_rebuilds(recipe, state)
    atomic_torch_save({"format": FORMAT, **recipe, "state_dict": state}, path)


def check_recipe_rebuilds(recipe: dict, state: dict) -> None:
    """Refuse now what ``load_compact`` would call damaged: a recipe that rebuilds other shapes than ``state``'s.

    Costs one build of the dense model and one compaction (~0.1 s for a resnet18), paid once per saved file.
    """
    rebuilt = rebuild_compact(recipe).state_dict()
    differ = sorted(k for k in state.keys() | rebuilt.keys()
                    if k not in state or k not in rebuilt or state[k].shape != rebuilt[k].shape)
    if differ:
        shown = ", ".join(f"{k}: {_shape(state.get(k))} in the model, {_shape(rebuilt.get(k))} rebuilt"
                          for k in differ[:3])
        raise UserError(
            f"save_compact refused: the model's recipe (builder {recipe['builder']!r}, {recipe['model_name']!r}, "
            f"{recipe['model_kwargs']}) does not rebuild it, so the file would not load ({len(differ)} tensors "
            f"differ: {shown}). Save the model ChannelExplorer.compact() returned, unchanged; to compress a "
            "model of your own class, give ChannelExplorer builder= (a function or 'package.module:function' "
            "that builds the DENSE model) and builder_kwargs=, or, for a compact model compressed again, no "
            "builder at all (its recipe carries over)")


def _shape(tensor) -> str:
    return "missing" if tensor is None else str(tuple(tensor.shape))


def load_compact(path: str | os.PathLike, *, map_location="cpu") -> nn.Module:
    """Rebuild a compact model saved by ``save_compact``; loads with ``weights_only=True``."""
    try:
        os.stat(path)
    except FileNotFoundError:  # torch's own error names neither the path's meaning nor what to give
        raise FileNotFoundError(f"no chex-tune compact model at {os.fspath(path)!r}: give the path of a file written "
                                "by chex_tune.save_compact (a run's compact.pt)") from None
    payload = torch_load(path, "chex-tune compact model", map_location=map_location,
                         hint=" (chex_tune.save_compact writes them)")
    return compact_from_payload(payload, path)


def compact_from_payload(payload, path: str | os.PathLike) -> nn.Module:
    """The compact model in a ``save_compact`` payload already read from ``path``, checked as ``load_compact`` does."""
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != FORMAT:
        raise UserError(f"{path} is not a chex-tune compact model (format {found!r}, expected {FORMAT!r}; "
                        f"chex_tune.save_compact writes them)")
    missing = [key for key in (*RECIPE_KEYS, "state_dict") if key not in payload]
    if missing:
        raise UserError(f"{path} is damaged: a chex-tune compact model without {', '.join(missing)}")
    small = rebuild_compact(payload, source=path)
    try:
        small.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1 if "\n" in str(exc) else 0].strip()
        raise UserError(f"{path} is damaged: its weights do not fit the model its recipe describes ({first})") from None
    return small.eval()


def build_dense(recipe: dict, *, source="the recipe") -> nn.Module:
    """The dense model a recipe's compact model was cut from (freshly initialised weights)."""
    return get_builder(recipe["builder"], source=str(source))(recipe["model_name"], **recipe["model_kwargs"])


def rebuild_compact(recipe: dict, *, source="the recipe") -> nn.Module:
    """The compact structure a recipe describes (freshly initialised weights), carrying the recipe."""
    dense = build_dense(recipe, source=source)
    small = prune_copy(dense.eval(), recipe["removed"], torch.zeros(recipe["input_shape"]))
    small.chex_recipe = {k: recipe[k] for k in RECIPE_KEYS}
    return small


def make_recipe(model: nn.Module, removed: dict[str, list[int]], input_shape, *, builder: str | None,
                model_name: str | None, model_kwargs: dict | None) -> dict | None:
    """The recipe ``load_compact`` replays; None when the dense model cannot be rebuilt by name.

    ``removed`` is in the dense model's channel indices. A ``model`` that is itself compact (it carries the
    ``chex_recipe`` it was built from: compacted again, in memory or after ``load_compact``) keeps its
    recipe's builder when none is given, and what it lost already stays removed: its recipe names the
    dense model that ``load_compact`` rebuilds, in any process, whatever class the model is.
    """
    earlier = getattr(model, "chex_recipe", None)
    if model_name is None and builder is None and earlier is not None:
        builder, model_name, model_kwargs = earlier["builder"], earlier["model_name"], earlier["model_kwargs"]
    if model_name is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        model_name = cfg.get("architecture")
        if model_name is None:
            return None
        builder = builder or "timm"
        kwargs = {"num_classes": getattr(model, "num_classes", None), "in_chans": int(input_shape[1])}
        model_kwargs = {k: v for k, v in kwargs.items() if v is not None} | dict(model_kwargs or {})
    recipe = {"builder": builder or "timm", "model_name": model_name, "model_kwargs": dict(model_kwargs or {}),
              "input_shape": [1, *list(input_shape[1:])], "removed": removed}
    if earlier is not None and all(earlier[k] == recipe[k] for k in ("builder", "model_name", "model_kwargs")):
        # The same dense model: the channels it lost before stay lost (a no-op where ``removed`` was composed).
        names = [*earlier["removed"], *(name for name in removed if name not in earlier["removed"])]
        recipe["removed"] = {name: sorted(set(earlier["removed"].get(name, ())) | set(removed.get(name, ())))
                             for name in names}
    return recipe
