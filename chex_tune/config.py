"""CHEX settings as one frozen dataclass, validated at the edge.

The same field names serve the Python API, YAML files, the CLI, Ray configs and MLflow params, so a
value is spelled one way everywhere. Only the schedule's length (``total``) is not here: it depends
on the training run (epochs or steps) and is given to ``ChannelExplorer`` directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from chex_tune.core.allocation import ALLOCATORS
from chex_tune.core.regrow import SAMPLERS
from chex_tune.core.scoring import SCORERS


@dataclass(frozen=True)
class ChexConfig:
    sparsity: float = 0.5  # fraction of prunable channels removed at the end, [0, 1)
    regrow_ratio: float = 0.3  # delta0: initial regrow fraction of all prunable channels, <= sparsity
    period: int = 1  # steps (or epochs) between prune-regrow steps
    explore_until: float = 0.72  # fraction of training after which masks are frozen
    unit: str = "step"  # what period/total count: "step" or "epoch"
    scorer: str = "css"
    sampler: str = "projection"
    allocator: str = "gamma-channels"
    macs_target: float | None = None  # fraction of dense MACs to keep (allocator "gamma-macs"/"uniform")
    reallocate: bool = True  # rank inactive channels by their most-recently-used |gamma|
    min_width: float = 0.05  # fraction of each group always kept (at least one unit)
    width_multiple: int = 1  # round kept widths to this many channels
    seed: int = 0

    def __post_init__(self) -> None:
        _in_range("sparsity", self.sparsity, 0.0, 1.0, closed_high=False)
        _in_range("regrow_ratio", self.regrow_ratio, 0.0, 1.0, closed_high=False)
        _in_range("explore_until", self.explore_until, 0.0, 1.0, closed_high=True, open_low=True)
        _in_range("min_width", self.min_width, 0.0, 1.0, closed_high=True)
        if not _is_int(self.period) or self.period <= 0:
            raise ValueError(f"period must be a positive integer (steps or epochs between prune-regrow "
                             f"steps), got {self.period!r}")
        if not _is_int(self.width_multiple) or self.width_multiple < 1:
            raise ValueError(f"width_multiple must be a positive integer, got {self.width_multiple!r}")
        _one_of("unit", self.unit, ("step", "epoch"))
        _one_of("scorer", self.scorer, tuple(SCORERS))
        _one_of("sampler", self.sampler, tuple(SAMPLERS))
        _one_of("allocator", self.allocator, ALLOCATORS)
        if self.macs_target is not None:
            _in_range("macs_target", self.macs_target, 0.0, 1.0, closed_high=True, open_low=True)
            if self.allocator == "gamma-channels":
                raise ValueError("macs_target is set but allocator is 'gamma-channels'; "
                                 "use allocator 'gamma-macs' (or 'uniform') for a MACs budget")
        elif self.allocator == "gamma-macs":
            raise ValueError("allocator 'gamma-macs' needs macs_target (fraction of dense MACs to keep, in (0, 1])")
        elif self.regrow_ratio > self.sparsity:
            raise ValueError(f"regrow_ratio must be <= sparsity ({self.sparsity}), got {self.regrow_ratio}")

    @classmethod
    def from_dict(cls, values: dict) -> ChexConfig:
        """Build from YAML/CLI/Ray values; unknown keys are rejected by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CHEX setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(name, value, low, high, *, closed_high, open_low=False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (low < value if open_low else low <= value) and (value <= high if closed_high else value < high)
    if not ok:
        allowed = f"{'(' if open_low else '['}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")


def _one_of(name, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
