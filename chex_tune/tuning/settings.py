"""From sampled values to validated settings, and to the flat params an MLflow run shows.

A search may sample ``regrow_fraction`` instead of ``regrow_ratio``: the regrow ratio as a fraction of the
budget's channel sparsity (``regrow_ratio = regrow_fraction * sparsity``), so CHEX's ``regrow_ratio <=
sparsity`` holds at every sampled point. It is turned into ``regrow_ratio`` here, the one place it is read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from chex_tune.config import ChexConfig, RunConfig
from chex_tune.tuning.protocol import RESERVED_KEYS, has_constants, own_entries, parent_of, settings_in

REGROW_FRACTION = "regrow_fraction"


def chex_fields() -> tuple[str, ...]:
    """The engine's CHEX settings, read from ChexConfig itself (its fields change; nothing here lists them)."""
    return tuple(f.name for f in dataclasses.fields(ChexConfig))


def _default(name: str):
    return next(f.default for f in dataclasses.fields(ChexConfig) if f.name == name)


def channel_sparsity(values: Mapping) -> float:
    """The budget as a fraction of channels removed: ``sparsity``, or about ``1 - sqrt(macs_target)`` for a
    MACs budget (a conv's MACs scale with its input times its output channels), and the same for a latency budget
    given as a fraction (one in milliseconds: the default sparsity, the dense latency being unknown here)."""
    if values.get("macs_target") is not None:
        return 1.0 - math.sqrt(values["macs_target"])
    if values.get("latency_target") is not None:
        from chex_tune.core.checks import parse_latency_target

        fraction, _ = parse_latency_target(values["latency_target"])
        return 1.0 - math.sqrt(fraction) if fraction is not None else _default("sparsity")
    return values.get("sparsity", _default("sparsity"))


def resolve(values: Mapping) -> dict:
    """Settings with ``regrow_fraction`` turned into ``regrow_ratio`` and chex-tune's constants dropped; with a MACs
    budget and no allocator given, the engine's default allocator if it takes one, else the first that does."""
    values = {k: v for k, v in values.items() if k not in RESERVED_KEYS}
    if REGROW_FRACTION in values:
        fraction = values.pop(REGROW_FRACTION)
        if "regrow_ratio" in values:
            raise ValueError(f"give regrow_ratio or {REGROW_FRACTION}, not both")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ValueError(f"{REGROW_FRACTION} must be in [0, 1], got {fraction!r}")
        values["regrow_ratio"] = fraction * channel_sparsity(values)
    if values.get("macs_target") is not None and "allocator" not in values:
        values["allocator"] = _allocator_for_macs_budget(values["macs_target"])
    return values


def _allocator_for_macs_budget(macs_target: float) -> str:
    from chex_tune.core.allocation import ALLOCATORS

    for name in (_default("allocator"), *ALLOCATORS):
        try:
            ChexConfig(macs_target=macs_target, allocator=name)
        except ValueError:
            continue
        return name
    raise ValueError(f"no registered allocator takes a MACs budget (tried {', '.join(ALLOCATORS)})")


def resolve_chex_settings(config: Mapping | ChexConfig) -> ChexConfig:
    """The validated CHEX settings of a trial's config (as a space wrote it), of a dict of CHEX settings, or a
    ChexConfig as it is. Names that are not CHEX settings are rejected by name."""
    if isinstance(config, ChexConfig):
        return config
    if not isinstance(config, Mapping):
        raise ValueError(f"CHEX settings must be a dict (a trial's config) or a ChexConfig, "
                         f"got {type(config).__name__}")
    if not has_constants(config):
        others = sorted(set(config) - set(chex_fields()) - {REGROW_FRACTION})
        if others:
            raise ValueError(f"the config has no chex_fixed/chex_searched entries (a SearchSpace's ray() and "
                             f"suggest() add them), so all of it is read as CHEX settings, and {others} are not "
                             f"CHEX settings (allowed: {', '.join(chex_fields())}); build the space with ChexSpace or "
                             "pass only CHEX settings")
    return ChexConfig.from_dict(resolve(settings_in(config)))


def run_settings(config: Mapping) -> dict:
    """A built-in trial's run settings: its settings resolved, and in an inheriting sweep or a family its parent's
    compact model as the start (the MACs budget stays a fraction of the dense model's: the start is compressed
    further)."""
    settings = resolve(settings_in(config))
    parent = parent_of(config)
    if parent is not None:
        settings["init"] = parent["path"]
    return settings


def trial_params(config: Mapping) -> dict:
    """A trial's settings as flat MLflow params: the user's own keys (nested dicts as ``a/b``) and every setting
    resolved (defaults too; the built-in trainable's config gives every RunConfig setting). A chex-tune setting
    whose name the user's config also has is logged as ``chex.<name>``."""
    own = own_entries(config)
    if not has_constants(config):
        return own
    values = settings_in(config)
    chex_only = set(values) <= set(chex_fields()) | {REGROW_FRACTION}
    settings = (resolve_chex_settings(config) if chex_only else RunConfig.from_dict(run_settings(config))).to_dict()
    if REGROW_FRACTION in values:
        settings[REGROW_FRACTION] = values[REGROW_FRACTION]
    # A user's own key of the same name (their data seed, say) keeps the plain name; the CHEX one is prefixed.
    return {**own, **{f"chex.{k}" if k in own else k: v for k, v in settings.items()}}
