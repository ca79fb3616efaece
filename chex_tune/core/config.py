"""CHEX settings: ``ChexConfig``, the one source of the engine's keyword arguments and their defaults.

It lives in core so that core imports nothing above it (``chex_tune.config`` re-exports it beside the
training settings). The names of scorers, samplers and allocators are checked against their registries,
imported when a config is validated rather than when this module is: reading settings (the CLI's parser,
YAML files) then needs no torch. The budget's kind and its target's check come from ``core/budgets.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chex_tune.core.checks import _in_range, _is_int, _one_of, parse_latency_target

if TYPE_CHECKING:
    from chex_tune.core.budgets import Budget


@dataclass(frozen=True)
class ChexConfig:
    """CHEX settings and their defaults: the one source of both (``ChannelExplorer`` takes these names).

    The budget is what the final sub-model must meet: a MACs budget when ``macs_target`` is set (a
    fraction of the dense MACs), a latency budget when ``latency_target`` is set (a fraction of the dense
    model's latency in a latency table, or milliseconds: "4ms"), otherwise a channel budget
    (``sparsity``). The allocator decides how that budget is shared between layers, whatever it counts.
    """

    sparsity: float = 0.5  # channel budget: fraction of prunable channels removed at the end, [0, 1)
    regrow_ratio: float = 0.1  # delta0: initial regrow fraction of all prunable channels, <= sparsity
    period: int = 50  # optimizer steps (or epochs, with unit "epoch") between prune-regrow steps
    explore_until: float = 0.15  # fraction of training after which masks freeze (paper: 0.72; benchmarks/train.md)
    unit: str = "step"  # what period/total count: "step" or "epoch"
    scorer: str = "css"
    # how the first mask (uniform widths, before any training) picks its units: "l1", each unit's filter L1 norm,
    # or "magnitude", the L2 norm of every parameter coupled to it (Torch-Pruning's group magnitude: for trained starts)
    initial_scorer: str = "l1"
    sampler: str = "projection"
    allocator: str = "gamma"  # "gamma": global |gamma| ranking (the paper); "uniform": same fraction everywhere
    macs_target: float | None = None  # MACs budget: fraction of dense MACs to keep (replaces the channel budget)
    # Latency budget, read from a latency table of the deployment target: a fraction of the dense model's predicted
    # latency in (0, 1], or milliseconds as text ("4ms", "2.5 ms"). Replaces the channel budget; not with macs_target
    latency_target: float | str | None = None
    reallocate: bool = True  # rank inactive channels by their most-recently-used |gamma|
    min_width: float = 0.05  # fraction of each group always kept (at least one unit)
    width_multiple: int = 1  # round kept widths to this many channels
    seed: int = 0

    def __post_init__(self) -> None:
        from chex_tune.core.allocation import ALLOCATOR_ALIASES, ALLOCATORS  # torch: only once a config is built
        from chex_tune.core.regrow import SAMPLERS
        from chex_tune.core.scoring import INITIAL_SCORERS, SCORERS

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
        _one_of("initial_scorer", self.initial_scorer, INITIAL_SCORERS)
        _one_of("sampler", self.sampler, tuple(SAMPLERS))
        if self.allocator in ALLOCATOR_ALIASES:
            if self.allocator == "gamma-macs" and self.macs_target is None:
                raise ValueError("allocator 'gamma-macs' needs macs_target (fraction of dense MACs to keep, "
                                 "in (0, 1]); the allocator is now just 'gamma' and macs_target alone sets a MACs "
                                 "budget")
            object.__setattr__(self, "allocator", ALLOCATOR_ALIASES[self.allocator])
        _one_of("allocator", self.allocator, ALLOCATORS)
        self.budget_kind.check(self)

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

    @property
    def budget_kind(self) -> type[Budget]:
        """The budget kind (``chex_tune.core.budgets``) whose target is set; two targets set is an error."""
        from chex_tune.core.budgets import budget_kind

        return budget_kind(self)

    @property
    def budget(self) -> str:
        """What the final sub-model's budget counts: "macs" (``macs_target``), "latency" (``latency_target``) or
        "channels" (``sparsity``): the name of ``budget_kind``."""
        return self.budget_kind.name

    @property
    def dense(self) -> bool:
        """Nothing to prune: train the dense baseline without an explorer."""
        return self.budget_kind.prunes_nothing(self)

    def macs_budget(self, dense_macs: float) -> float | None:
        """The MACs budget in MACs (what the compact model will cost), or None without one."""
        return None if self.macs_target is None else self.macs_target * dense_macs

    def latency_budget(self, dense_ms: float) -> float | None:
        """The latency budget in milliseconds, given the dense model's predicted latency, or None without one."""
        if self.latency_target is None:
            return None
        fraction, milliseconds = parse_latency_target(self.latency_target)
        return milliseconds if milliseconds is not None else fraction * dense_ms
