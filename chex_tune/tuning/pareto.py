"""Non-dominated sorting over any number of objectives (numpy only: importable without Ray or MLflow).

A point dominates another when it is at least as good in every objective and better in one. The
first front (rank 0) is the set of points nobody dominates; removing it, the next front is rank 1,
and so on. Points with a NaN objective are never on a front (rank -1); exact duplicates share a rank.
A failed or unfinished run enters as a row of NaN, so it takes part in nothing.

``hypervolume_2d`` measures a two-objective front by the area it dominates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def non_dominated_ranks(values, maximize: Sequence[bool]) -> np.ndarray:
    """Front rank of every row of ``values`` (n points x m objectives); -1 for rows with NaN."""
    points = np.asarray(values, dtype=float)
    if points.ndim != 2 or points.shape[1] != len(maximize):
        raise ValueError(f"values must be (points, {len(maximize)}) for {len(maximize)} objectives, "
                         f"got shape {points.shape}")
    # Minimize everything: negate the maximized columns.
    costs = np.where(np.asarray(maximize, dtype=bool), -points, points)
    ranks = np.full(len(costs), -1, dtype=int)
    remaining = np.flatnonzero(~np.isnan(costs).any(axis=1))
    rank = 0
    while remaining.size:
        sub = costs[remaining]
        no_worse = (sub[:, None, :] <= sub[None, :, :]).all(axis=2)  # [i, j]: i is nowhere worse than j
        better = (sub[:, None, :] < sub[None, :, :]).any(axis=2)
        dominated = (no_worse & better).any(axis=0)
        ranks[remaining[~dominated]] = rank
        remaining = remaining[dominated]
        rank += 1
    return ranks


def pareto_front(values, maximize: Sequence[bool]) -> np.ndarray:
    """Indices of the first front."""
    return np.flatnonzero(non_dominated_ranks(values, maximize) == 0)


def hypervolume_2d(points, maximize: Sequence[bool], reference=None) -> float:
    """Area dominated by ``points`` (n x 2) and bounded by ``reference``, in the objectives' own units.

    The larger, the better the front: it grows when a point moves outward or a new point fills a gap.
    Rows with NaN (failed runs) count for nothing; so do points not strictly better than the reference in both
    objectives. ``reference`` defaults to the worst value of each objective among the points (e.g. the
    lowest accuracy and the most MACs), so the front's two extreme points add no area of their own and
    a single point gives 0. Compare hypervolumes only under one explicit, shared reference (e.g.
    accuracy 0 and the dense model's MACs): the default moves with the points.
    """
    if len(maximize) != 2:
        raise ValueError(f"hypervolume_2d needs exactly 2 objectives, got {len(maximize)}")
    values = np.asarray(points, dtype=float).reshape(-1, 2)
    flip = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # minimize everything
    costs = values[~np.isnan(values).any(axis=1)] * flip
    if reference is None:
        if not len(costs):
            return 0.0
        bound = costs.max(axis=0)
    else:
        bound = np.asarray(reference, dtype=float).reshape(2) * flip
        if np.isnan(bound).any():
            raise ValueError(f"the reference point must be two numbers, got {reference!r}")
    inside = costs[(costs < bound).all(axis=1)]
    if not len(inside):
        return 0.0
    # Sweep along the first objective: each point's slab reaches to the next point (or the bound),
    # and its height is set by the best second objective seen so far (dominated points change nothing).
    inside = inside[np.lexsort((inside[:, 1], inside[:, 0]))]
    next_x = np.append(inside[1:, 0], bound[0])
    best_y = np.minimum.accumulate(inside[:, 1])
    return float(((next_x - inside[:, 0]) * (bound[1] - best_y)).sum())


def crowding_distances(values, maximize: Sequence[bool]) -> np.ndarray:
    """NSGA-II's crowding distance of every row of ``values`` (one front): how much room it keeps around itself.

    Per objective the points are sorted; the two extremes get infinity (so a front keeps its ends) and every
    other point adds the gap between its two neighbours, divided by the objective's range. The direction
    does not matter for a distance; ``maximize`` only checks the shape.
    """
    points = np.asarray(values, dtype=float).reshape(-1, len(maximize))
    distances = np.zeros(len(points))
    if len(points) <= 2:
        return np.full(len(points), np.inf)
    for column in points.T:
        order = np.argsort(column, kind="stable")
        spread = column[order[-1]] - column[order[0]]
        distances[order[0]] = distances[order[-1]] = np.inf
        if spread > 0:
            distances[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / spread
    return distances


def preference_keys(values, maximize: Sequence[bool]) -> list[tuple[int, float]]:
    """A sort key per row of ``values``, smaller = better: (front rank, minus crowding distance inside the front).
    Rows with NaN get the worst key. Equal keys are true ties (e.g. the two ends of a two-point front)."""
    points = np.asarray(values, dtype=float).reshape(-1, len(maximize))
    ranks = non_dominated_ranks(points, maximize)
    crowding = np.zeros(len(points))
    for rank in set(ranks.tolist()) - {-1}:
        members = np.flatnonzero(ranks == rank)
        crowding[members] = crowding_distances(points[members], maximize)
    worst = np.iinfo(np.int64).max
    return [(worst, 0.0) if rank < 0 else (int(rank), -float(distance)) for rank, distance in zip(ranks, crowding)]


def preference_order(values, maximize: Sequence[bool]) -> np.ndarray:
    """Indices of ``values``' rows, best first: by front rank, then within a front by crowding distance (the
    extremes and the isolated points first). Rows with NaN come last. Ties keep their input order."""
    keys = preference_keys(values, maximize)
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=int)
