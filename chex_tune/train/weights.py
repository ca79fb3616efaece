"""A trained start: the dense model's weights from a file, checked against the model before any training.

``init`` names a local file: a ``state_dict`` (``torch.save(model.state_dict())``), a checkpoint holding one
(under ``state_dict``, ``model`` or ``model_state_dict``: Lightning's, ours, most training scripts'), a
chex-tune ``compact.pt`` of a dense run (nothing removed), or a timm weights file (``.pth``, ``.bin`` or
``.safetensors``). A chex-tune compact model with channels removed is a start too: the run compresses it further,
its budget still a fraction of the original dense model's MACs (``read_start`` tells the two apart, reading the
file once). Everything is read with ``weights_only=True``; nothing is unpickled. The tuning layer turns an MLflow
model URI into such a file (``chex_tune.tuning.track.runs.resolve_init``).

Bad input is one clear error: a missing or damaged file, weights that do not fit the model (the first mismatched
key with both shapes, and how many keys differ).
"""

from __future__ import annotations

import hashlib
import pathlib

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
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--init {str(path)!r}: no such file; give the trained dense model's weights (a state_dict, "
                        "a checkpoint with one, a dense run's compact.pt or a timm weights file) or an MLflow model "
                        "URI (runs:/RUN_ID or models:/NAME@ALIAS)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path), None
    payload = torch_load(path, "weights file", hint=" (give a state_dict saved with torch.save)")
    if isinstance(payload, dict) and payload.get("format", "").startswith("chex_tune.compact/"):
        if any(payload.get("removed", {}).values()):
            return None, payload
        payload = payload["state_dict"]
    elif isinstance(payload, dict) and not _is_state_dict(payload):
        found = [key for key in CHECKPOINT_KEYS if _is_state_dict(payload.get(key))]
        if not found:
            raise UserError(f"--init {path}: a dict without model weights (keys {sorted(payload)[:8]}); give a "
                            f"state_dict, or a checkpoint holding one under {', '.join(CHECKPOINT_KEYS)}")
        payload = payload[found[0]]
    if not _is_state_dict(payload):
        raise UserError(f"--init {path}: holds a {type(payload).__name__}, not a state_dict of tensors")
    return _without_wrapper_prefix(payload), None


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


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [key for key in own if key in state and tuple(own[key].shape) != tuple(state[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise UserError(f"--init {path}: its weights do not fit the model: {key} has shape "
                        f"{tuple(state[key].shape)} in the file and {tuple(own[key].shape)} in the model"
                        f"{f' ({len(mismatched)} keys differ in shape)' if len(mismatched) > 1 else ''}; train the "
                        "weights with the same model, classes and input channels (and stem) as this run")
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
    budget_of_start(config.chex, model, data.example_input()[:1], dense_macs, config.train.init)


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
    state, compact = read_start(settings.init)
    if compact is not None:
        return compact_from_payload(compact, settings.init), *dense
    _load_state(model, state, settings.init)  # before the explorer: its first mask reads these filters
    return model, *dense


def budget_of_start(chex, model: nn.Module, example, dense_macs: float, init: str | None):
    """The CHEX settings for the explorer of ``model``: a MACs budget is a fraction of the dense model's MACs, so on
    a compact start it becomes a fraction of the start's own."""
    import dataclasses

    from chex_tune.core.flops import count_macs

    start_macs = count_macs(model, example)
    if start_macs >= dense_macs:
        return chex
    if chex.macs_target is None or chex.macs_target * dense_macs >= start_macs:
        raise UserError(f"--init {init} is a compact model at {start_macs / dense_macs:.1%} of the dense MACs: "
                        f"continuing it needs a smaller macs_target (got {chex.macs_target})")
    return dataclasses.replace(chex, macs_target=chex.macs_target * dense_macs / start_macs)
