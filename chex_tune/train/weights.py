"""A trained start: the dense model's weights from a file, checked against the model before any training.

``init`` names a local file: a ``state_dict`` (``torch.save(model.state_dict())``), a checkpoint holding one
(under ``state_dict``, ``model`` or ``model_state_dict``: Lightning's, ours, most training scripts'), a
chex-tune ``compact.pt`` of a dense run (nothing removed), or a timm weights file (``.pth``, ``.bin`` or
``.safetensors``). A chex-tune compact model with channels removed is a start too: the run compresses it further,
its budget still a fraction of the original dense model's MACs (``read_start`` tells the two apart, reading the
file once). Everything is read with ``weights_only=True``; nothing is unpickled. The tuning layer turns an MLflow
model URI into such a file (``chex_tune.tuning.track.runs.resolve_init``).

What the weights say of the run that can load them is read from them (``weights_facts``): the input channels (the
first conv's weight, dim 1), the classes (the classifier's outputs) and the stem (the first conv's kernel: timm's
own, e.g. resnet's 7x7, or the small stem's 3x3; a chex-tune file's recipe names it). ``fit_to_weights`` sets the
input channels and stem a run leaves out, and refuses a setting that contradicts the weights, naming the flag that
fits them; the front ends call it before any run is created.

Bad input is one clear error: a missing or damaged file, weights that do not fit the model (the setting that
differs and the flag that fits, else the first mismatched key with both shapes, and how many keys differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from chex_tune.core.errors import UserError, torch_load

CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")  # where checkpoints keep the model's weights
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")  # DDP, Lightning, torch.compile


def file_digest(path: str | pathlib.Path) -> str:
    """``sha256:<hex>`` of a file's bytes: what a run records of its trained start."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def read_start(path: str | pathlib.Path) -> tuple[dict[str, torch.Tensor] | None, dict | None]:
    """``path`` read once: ``(state_dict, None)`` for dense weights (any of the forms in the module docstring), or
    ``(None, payload)`` for a chex-tune compact model with channels removed."""
    state, compact, _ = _read(path)
    return state, compact


def local_start(path: str | pathlib.Path) -> str:
    """A trained start on this machine, as the absolute path every trial reads (trials run in their own
    directories), checked readable as a start before any work: a missing or damaged file is one line, now."""
    path = pathlib.Path(path).expanduser().resolve()
    read_start(path)
    return str(path)


def _read(path: str | pathlib.Path) -> tuple[dict[str, torch.Tensor] | None, dict | None, dict | None]:
    """``read_start``'s pair, and the recipe of a chex-tune compact file (dense or not; None for other files)."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--init {str(path)!r}: no such file; give the trained dense model's weights (a state_dict, "
                        "a checkpoint with one, a dense run's compact.pt or a timm weights file) or an MLflow model "
                        "URI (runs:/RUN_ID or models:/NAME@ALIAS)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path), None, None
    payload = torch_load(path, "weights file", hint=" (give a state_dict saved with torch.save)")
    recipe = None
    if isinstance(payload, dict) and payload.get("format", "").startswith("chex_tune.compact/"):
        if any(payload.get("removed", {}).values()):
            return None, payload, payload
        recipe, payload = payload, payload["state_dict"]
    elif isinstance(payload, dict) and not _is_state_dict(payload):
        found = [key for key in CHECKPOINT_KEYS if _is_state_dict(payload.get(key))]
        if not found:
            raise UserError(f"--init {path}: a dict without model weights (keys {sorted(payload)[:8]}); give a "
                            f"state_dict, or a checkpoint holding one under {', '.join(CHECKPOINT_KEYS)}")
        payload = payload[found[0]]
    if not _is_state_dict(payload):
        raise UserError(f"--init {path}: holds a {type(payload).__name__}, not a state_dict of tensors")
    return _without_wrapper_prefix(payload), None, recipe


def read_state_dict(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """The dense model's weights held in ``path`` (any of the forms in the module docstring)."""
    state, compact = read_start(path)
    if compact is not None:
        removed = sum(len(channels) for channels in compact["removed"].values())
        raise UserError(f"--init {pathlib.Path(path).expanduser()}: a compact model with {removed} channels removed, "
                        "not a dense model; give the dense model's weights (a dense run's compact.pt, or your trained "
                        "model's state_dict)")
    return state


def _read_safetensors(path: pathlib.Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return _without_wrapper_prefix(load_file(str(path)))
    except SafetensorError as exc:
        raise UserError(f"--init {path} is damaged: not a readable safetensors file ({exc})") from None


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _without_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare model names them: a prefix every key shares from a wrapper (DDP's ``module.``) removed."""
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}
    return state


def load_trained(model: nn.Module, path: str | pathlib.Path) -> None:
    """Load the trained weights in ``path`` into ``model``, or say exactly why they do not fit."""
    _load_state(model, read_state_dict(path), path)


@dataclasses.dataclass(frozen=True)
class WeightsFacts:
    """What a trained start's weights say of the run that can load them; None where they do not say."""

    in_chans: int | None = None
    classes: int | None = None
    stem: str | None = None  # "timm" or "small"
    evidence: dict[str, str] = dataclasses.field(default_factory=dict)  # setting -> what in the file says so


def weights_facts(path: str | pathlib.Path, model_name: str) -> WeightsFacts:
    """The input channels, classes and stem of the weights in ``path`` for timm model ``model_name``."""
    state, compact, recipe = _read(path)
    return _facts(state, model_name, recipe)


def _facts(state: dict[str, torch.Tensor] | None, model_name: str, recipe: dict | None) -> WeightsFacts:
    from chex_tune.train.models import SMALL_STEM_BUILDER

    if recipe is not None:  # a chex-tune file: its recipe says how its dense model was built
        kwargs = recipe.get("model_kwargs") or {}
        stem = {SMALL_STEM_BUILDER: "small", "timm": "timm"}.get(recipe.get("builder"))
        said = f"its recipe ({recipe.get('builder')!r}, {kwargs})"
        return WeightsFacts(kwargs.get("in_chans"), kwargs.get("num_classes"), stem,
                            {"in_chans": said, "classes": said, "stem": said})
    first, timm_kernel, head = _stem_and_head(model_name)
    in_chans = classes = stem = None
    evidence = {}
    conv = state.get(f"{first}.weight") if first else None
    if conv is not None and conv.dim() == 4:
        in_chans, kernel = int(conv.shape[1]), tuple(conv.shape[2:])
        evidence["in_chans"] = evidence["stem"] = f"{first}.weight {tuple(conv.shape)}"
        if timm_kernel != SMALL_KERNEL:  # where both stems share a 3x3 conv the weights cannot tell them apart
            stem = "timm" if kernel == timm_kernel else "small" if kernel == SMALL_KERNEL else None
    weight = state.get(f"{head}.weight") if head else None
    if weight is not None and weight.dim() >= 2:
        classes = int(weight.shape[0])
        evidence["classes"] = f"{head}.weight {tuple(weight.shape)}"
    return WeightsFacts(in_chans, classes, stem, evidence)


SMALL_KERNEL = (3, 3)  # the small stem's first conv (models.use_small_stem)


def _stem_and_head(model_name: str) -> tuple[str | None, tuple | None, str | None]:
    """The first conv's name and kernel in timm's own stem, and the classifier's name, of ``model_name`` (built on
    the meta device: no memory, no init)."""
    from chex_tune.train.models import create_timm_model

    try:
        with torch.device("meta"):
            model = create_timm_model(model_name)
    except (RuntimeError, NotImplementedError):  # a model whose construction reads tensor values
        model = create_timm_model(model_name)
    first = next(((n, m.kernel_size) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_name = next((n for n, m in model.named_modules() if m is head and isinstance(m, (nn.Linear, nn.Conv2d))),
                     None)
    return first[0], tuple(first[1]) if first[1] else None, head_name


def cli_flag(key: str, value) -> str:
    """How ``chex-tune train`` and ``chex-tune family`` are told a setting."""
    return f"--stem {value}" if key == "stem" else f"--set {key}={value}"


def space_flag(key: str, value) -> str:
    """How a sweep is told a setting: its search space's fixed settings."""
    return f"'{key}: {value}' under the space's fixed"


def fit_to_weights(settings: dict, path: str | pathlib.Path, *, explicit: Iterable[str] | None = None,
                   flag: Callable[[str, object], str] = cli_flag) -> dict:
    """``settings`` (flat RunConfig settings) with the input channels and stem the weights in ``path`` were trained
    with where ``explicit`` (default: every key of ``settings``) leaves them out ("auto" and None leave them out);
    one that contradicts the weights is refused, naming the ``flag`` that fits them."""
    from chex_tune.config import TrainConfig

    explicit = set(settings) if explicit is None else set(explicit)
    facts = weights_facts(path, settings.get("model") or TrainConfig.model)
    fitted = dict(settings)
    for key in ("in_chans", "stem"):
        found = getattr(facts, key)
        given = settings.get(key) if key in explicit else None
        if found is None:
            continue
        if given in (None, "auto"):
            fitted[key] = found
        elif given != found:
            raise _contradiction(path, facts, key, given, flag)
    return fitted


def _contradiction(path, facts: WeightsFacts, key: str, used, flag: Callable[[str, object], str]) -> UserError:
    found = getattr(facts, key)
    said = (f"take {found} input channel{'s' if found != 1 else ''}" if key == "in_chans" else
            f"were trained with the {found} stem")
    return UserError(f"--init {path}: its weights {said} ({facts.evidence[key]}) and this run sets {key} {used}; "
                     f"pass {flag(key, found)}, or leave {key} out and --init sets it")


def _check_fits(path, facts: WeightsFacts, *, in_chans: int, stem: str, classes: int, dataset: str) -> None:
    """Refuse weights whose input channels, stem or classes differ from the run's, naming what to pass."""
    if facts.classes is not None and facts.classes != classes:
        raise UserError(f"--init {path}: its weights classify {facts.classes} classes ({facts.evidence['classes']}) "
                        f"and dataset {dataset} has {classes}; give the dataset they were trained on (--dataset, "
                        "--data-dir)")
    for key, used in (("in_chans", in_chans), ("stem", stem)):
        if getattr(facts, key) not in (None, used):
            raise _contradiction(path, facts, key, used, cli_flag)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [key for key in own if key in state and tuple(own[key].shape) != tuple(state[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise UserError(f"--init {path}: its weights do not fit the model: {key} has shape "
                        f"{tuple(state[key].shape)} in the file and {tuple(own[key].shape)} in the model"
                        f"{f' ({len(mismatched)} keys differ in shape)' if len(mismatched) > 1 else ''}; were they "
                        "trained with another model? give it with --model")
    if missing or unexpected:
        raise UserError(f"--init {path}: its weights do not fit the model: {len(missing)} of the model's keys are "
                        f"missing from the file (first: {missing[:2]}) and {len(unexpected)} of the file's are not "
                        f"in the model (first: {unexpected[:2]}); is it the same architecture?")
    model.load_state_dict(state)


def check_init(config) -> None:
    """Build the start ``config``'s run would build (its dataset fixes classes and input channels) and check its
    budget, so that weights that do not fit fail before a sweep starts rather than in every trial."""
    from chex_tune.train.data import load_data
    from chex_tune.train.models import resolve_stem

    data = load_data(config.train, "cpu")
    model, dense_macs, _ = start_model(config.train, data, resolve_stem(config.train.stem, data.image_size))
    budget_of_start(config.chex, model, data.example_input()[:1], dense_macs, f"--init {config.train.init}")


def start_model(settings, data, stem: str) -> tuple[nn.Module, int, int]:
    """The model a run starts from, and the dense model's MACs and params: fresh (norm scales at ``norm_init``),
    trained weights (``init``), or a compact model from ``init`` that the run compresses further."""
    from chex_tune.core.compact import compact_from_payload
    from chex_tune.core.flops import count_macs, count_params
    from chex_tune.train.models import create_model, init_norm_scales

    model = create_model(settings.model, num_classes=data.num_classes, in_chans=data.in_chans, stem=stem,
                         pretrained=settings.pretrained)
    dense = count_macs(model, data.example_input()[:1]), count_params(model)
    if settings.init is None:
        if settings.norm_init is not None and not settings.pretrained:
            init_norm_scales(model, settings.norm_init)
        return model, *dense
    state, compact, recipe = _read(settings.init)
    _check_fits(settings.init, _facts(state, settings.model, recipe), in_chans=data.in_chans, stem=stem,
                classes=data.num_classes, dataset=settings.dataset)
    if compact is not None:
        return compact_from_payload(compact, settings.init), *dense
    _load_state(model, state, settings.init)  # before the explorer: its first mask reads these filters
    return model, *dense


def budget_of_start(chex, model: nn.Module, example, dense_macs: float, start: str):
    """The CHEX settings for the explorer of ``model``: a MACs budget is a fraction of the dense model's MACs, so on
    a compact start it becomes a fraction of the start's own (``start`` names it in an error: "--init PATH")."""
    import dataclasses

    from chex_tune.core.flops import count_macs

    start_macs = count_macs(model, example)
    if start_macs >= dense_macs:
        return chex
    if chex.macs_target is None or chex.macs_target * dense_macs >= start_macs:
        raise UserError(f"{start} is a compact model at {start_macs / dense_macs:.1%} of the dense MACs: "
                        f"continuing it needs a smaller macs_target (got {chex.macs_target})")
    return dataclasses.replace(chex, macs_target=chex.macs_target * dense_macs / start_macs)
