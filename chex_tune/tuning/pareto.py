"""Non-dominated sorting over any number of objectives (numpy only: importable without Ray or MLflow).

A point dominates another when it is at least as good in every objective and better in one. The
first front (rank 0) is the set of points nobody dominates; removing it, the next front is rank 1,
and so on. Points with a NaN objective are never on a front (rank -1); exact duplicates share a rank.
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
