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
  a late, cheap layer. The explorer divides the scores; here it ranks like ``gamma``.
- ``gamma-normalized``: the same ranking with each unit's |gamma| divided by its group's mean |gamma|, so a
  group's scale does not decide its width, only how unequal its units are. For trained starts, whose layers'
  scales differ for reasons that have nothing to do with importance (a global |gamma| ranking there keeps a
  sixth of the parameters a uniform allocation keeps at the same MACs: benchmarks/front.md).
- ``uniform``: every group keeps the same fraction (the "no re-allocation" ablation).

Every group keeps at least ``min_units`` (never zero) and widths can be rounded to a multiple.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

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

    def ranked_widths(self, scores: list[torch.Tensor | None], level: int) -> list[int]:
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


def _ranked(problem: AllocationProblem, scores: list[torch.Tensor | None], level: int) -> list[int]:
    return problem.ranked_widths(scores, level)


def _uniform(problem: AllocationProblem, scores: list[torch.Tensor | None], level: int) -> list[int]:
    return problem.uniform_widths(level / problem.total_units)


# An allocator: (problem, scores, level K) -> widths. gamma-per-cost and gamma-normalized rank like gamma, on
# scores the explorer has divided by each unit's cost or by its group's mean.
ALLOCATORS: dict[str, Callable[[AllocationProblem, list, int], list[int]]] = {
    "gamma": _ranked, "gamma-per-cost": _ranked, "gamma-normalized": _ranked, "uniform": _uniform}


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


def allocate(problem: AllocationProblem, *, allocator: str, scores: list[torch.Tensor | None],
             keep_channels: float | None = None, cost_target: float | None = None,
             cost_of: Callable[[list[int]], float] | None = None) -> list[int]:
    """Widths (in units) meeting a channel budget (``keep_channels``) or a cost budget.

    A cost budget is what a MACs or latency budget becomes: ``cost_target`` in the cost's own unit (MACs,
    milliseconds) and ``cost_of(widths)`` the cost of a width vector, growing with the widths; the level whose
    cost lands nearest the target wins.
    """
    check_allocator(allocator)

    def widths_at(level: int) -> list[int]:
        return ALLOCATORS[allocator](problem, scores, level)

    if cost_target is not None:
        if cost_of is None:
            raise ValueError("a cost budget needs cost_of")
        level = search_level(lambda k: cost_of(widths_at(k)), cost_target, problem.total_units, nearest=True)
    else:
        if keep_channels is None:
            raise ValueError("give keep_channels or cost_target")
        level = search_level(lambda k: problem.channels(widths_at(k)), keep_channels, problem.total_units,
                             nearest=False)
    return widths_at(level)
