"""Inter-layer allocation: how many units each group keeps under one global budget.

An allocator turns a global *level* ``K`` (how many units the global ranking admits) into one width
per group. The budget then picks the level: the smallest ``K`` whose sub-model reaches the target
channel count (``channels``) or the ``K`` whose cost (MACs, or milliseconds read from a latency table) lands
nearest the target. Every cost grows with ``K``, so a bisection finds it.

- ``gamma``: rank every unit of every group by its norm scale |gamma| (the paper). Groups without a
  norm layer (squeeze-excite reductions, norm-free nets) keep the same fraction as the ranked units.
- ``gamma-per-cost``: the same ranking with each unit's |gamma| divided by what it costs in the
  budget's currency (its MACs for a MACs budget, its milliseconds for a latency budget, its channels for a
  channel budget), so a channel of an early, high-resolution layer must matter more to stay than one of
  a late, cheap layer. The budget kind says what a unit costs (``core/budgets.py``).
- ``gamma-normalized``: the same ranking with each unit's |gamma| divided by its group's mean |gamma|, so a
  group's scale does not decide its width, only how unequal its units are. For trained starts, whose layers'
  scales differ for reasons that have nothing to do with importance (a global |gamma| ranking there keeps a
  sixth of the parameters a uniform allocation keeps at the same MACs: benchmarks/front.md).
- ``uniform``: every group keeps the same fraction (the "no re-allocation" ablation).

Every group keeps at least ``min_units`` (never zero) and widths can be rounded to a multiple.
An allocator is an ``Allocator``: how it weighs the scores before ranking, and the widths a level gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Scores = list[torch.Tensor | None]  # per group: one score per unit, or None (ranked at the global fraction)

# Names from before the budget became its own setting (``macs_target``): both meant "gamma".
ALLOCATOR_ALIASES = {"gamma-channels": "gamma", "gamma-macs": "gamma"}


def check_allocator(name: str) -> None:
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; choose one of: {', '.join(ALLOCATORS)}")


@dataclass
class AllocationProblem:
    """What every allocation needs to know about the groups."""

    units: list[int]  # units per group
    tile: list[int]  # channels per unit
    min_units: list[int]  # floor per group (>= 1)
    step_units: list[int]  # widths are multiples of this (except at the group's full size)

    @classmethod
    def for_groups(cls, groups: Sequence, *, min_width: float, width_multiple: int) -> AllocationProblem:
        """The problem of channel groups (their ``units`` and ``tile``), each keeping at least ``min_width`` of its
        units and widths in multiples of ``width_multiple`` channels."""
        steps = [max(1, math.lcm(width_multiple, g.tile) // g.tile) for g in groups]
        # the floor rounds up to the multiple too: a floor that is not one would put an unaligned width back
        floors = [min(g.units, math.ceil(max(1, math.ceil(min_width * g.units)) / step) * step)
                  for g, step in zip(groups, steps)]
        return cls(units=[g.units for g in groups], tile=[g.tile for g in groups], min_units=floors,
                   step_units=steps)

    @property
    def total_units(self) -> int:
        return sum(self.units)

    def channels(self, widths: list[int]) -> int:
        return sum(w * t for w, t in zip(widths, self.tile))

    def _round(self, number: int, want: float) -> int:
        step = self.step_units[number]
        width = int(round(want / step)) * step if step > 1 else int(round(want))
        return max(self.min_units[number], min(self.units[number], width))

    def uniform_widths(self, fraction: float) -> list[int]:
        return [self._round(n, fraction * u) for n, u in enumerate(self.units)]

    def ranked_widths(self, scores: Scores, level: int) -> list[int]:
        """Widths when the top ``level`` units of the global |gamma| ranking are admitted."""
        ranked = [(n, s) for n, s in enumerate(scores) if s is not None]
        ranked_total = sum(self.units[n] for n, _ in ranked)
        fraction = level / self.total_units
        widths = self.uniform_widths(fraction)
        if not ranked:
            return widths
        owner = torch.cat([torch.full((len(s),), n) for n, s in ranked])
        values = torch.cat([s.float() for _, s in ranked])
        admitted = int(round(fraction * ranked_total))
        # A tie at the cut goes to the groups listed first (a stable sort). Ties are real: units never trained
        # hold their initial scale exactly. With regrowth that barely moves the widths; without it, a timm
        # ResNet's residual streams (listed first) take the whole tie. Splitting ties by how many tied units
        # each group has was measured and not kept: no resolved change (benchmarks/train_notes.md).
        order = torch.sort(values, descending=True, stable=True).indices[:admitted]
        counts = torch.bincount(owner[order], minlength=len(scores))
        for n, _ in ranked:
            widths[n] = self._round(n, int(counts[n]))
        return widths


def _ranked(problem: AllocationProblem, scores: Scores, level: int) -> list[int]:
    return problem.ranked_widths(scores, level)


def _uniform(problem: AllocationProblem, scores: Scores, level: int) -> list[int]:
    return problem.uniform_widths(level / problem.total_units)


def _as_given(scores: Scores, unit_costs: Callable[[], list[float]]) -> Scores:
    return scores


def _per_unit_cost(scores: Scores, unit_costs: Callable[[], list[float]]) -> Scores:
    return [s if s is None else s / cost for s, cost in zip(scores, unit_costs())]


def _over_group_mean(scores: Scores, unit_costs: Callable[[], list[float]]) -> Scores:
    return [s if s is None else s / s.abs().mean().clamp_min(1e-12) for s in scores]


@dataclass(frozen=True)
class Allocator:
    """``weigh(scores, unit_costs)``: the |gamma| scores as the ranking sees them, called once per exploration step
    (``unit_costs()`` gives each group's relative cost of one unit in the budget's unit; only called by those that
    need it: a latency budget pays one prediction per group for it). ``widths(problem, scores, level K)``: the
    widths when the ranking admits K units."""

    widths: Callable[[AllocationProblem, Scores, int], list[int]]
    weigh: Callable[[Scores, Callable[[], list[float]]], Scores] = _as_given


ALLOCATORS: dict[str, Allocator] = {
    "gamma": Allocator(_ranked), "gamma-per-cost": Allocator(_ranked, _per_unit_cost),
    "gamma-normalized": Allocator(_ranked, _over_group_mean), "uniform": Allocator(_uniform)}


def search_level(cost: Callable[[int], float], target: float, high: int, *, nearest: bool) -> int:
    """Smallest level in [0, high] with cost >= target (or the one nearest to it when ``nearest``)."""
    low_level, high_level = 0, high
    while low_level < high_level:
        mid = (low_level + high_level) // 2
        if cost(mid) >= target:
            high_level = mid
        else:
            low_level = mid + 1
    if nearest and low_level > 0 and abs(cost(low_level - 1) - target) < abs(cost(low_level) - target):
        return low_level - 1
    return low_level


def allocate(problem: AllocationProblem, *, allocator: str, scores: Scores, keep_channels: float | None = None,
             cost_target: float | None = None, cost_of: Callable[[list[int]], float] | None = None,
             nearest: bool = True) -> list[int]:
    """Widths (in units) meeting a channel count (``keep_channels``) or a budget in its own unit.

    A budget (``core/budgets.py``) gives ``cost_target`` in its own unit (channels, MACs, milliseconds) and
    ``cost_of(widths)`` the cost of a width vector, growing with the widths; the level whose cost lands nearest
    the target wins, or with ``nearest=False`` the smallest that reaches it (what ``keep_channels`` does).
    """
    check_allocator(allocator)

    def widths_at(level: int) -> list[int]:
        return ALLOCATORS[allocator].widths(problem, scores, level)

    if cost_target is not None:
        if cost_of is None:
            raise ValueError("a cost budget needs cost_of")
        level = search_level(lambda k: cost_of(widths_at(k)), cost_target, problem.total_units, nearest=nearest)
    else:
        if keep_channels is None:
            raise ValueError("give keep_channels or cost_target")
        level = search_level(lambda k: problem.channels(widths_at(k)), keep_channels, problem.total_units,
                             nearest=False)
    return widths_at(level)
