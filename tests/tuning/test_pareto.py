"""Pareto fronts and hypervolume against slow, obviously correct references (numpy only: no Ray, no MLflow)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from chex_tune.tuning.pareto import hypervolume_2d, non_dominated_ranks, pareto_front


def dominates(a, b, maximize) -> bool:
    """a is at least as good as b everywhere and better somewhere (the definition, one pair at a time)."""
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        better |= (x > y) if up else (x < y)
    return better


def brute_ranks(points, maximize) -> list[int]:
    """Peel fronts one at a time with an O(n^2) dominance check per front; NaN rows get -1."""
    ranks = [-1] * len(points)
    left = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    rank = 0
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i], maximize) for j in left)]
        for i in front:
            ranks[i] = rank
        left = [i for i in left if i not in front]
        rank += 1
    return ranks


def random_points(seed: int, n: int, objectives: int) -> np.ndarray:
    """Coarse integer values (many ties), some exact duplicate rows and some NaN entries."""
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(n, objectives)).astype(float)
    points[rng.choice(n, size=n // 5, replace=False)] = points[rng.choice(n, size=n // 5, replace=False)]
    points[rng.random((n, objectives)) < 0.08] = np.nan
    return points


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("maximize", [(True, False), (False, False), (True, False, False), (True, True, False)])
def test_ranks_and_front_match_brute_force_peeling(seed, maximize):
    points = random_points(seed, 40, len(maximize))
    expected = brute_ranks(points.tolist(), maximize)
    ranks = non_dominated_ranks(points, maximize)
    assert ranks.tolist() == expected
    assert pareto_front(points, maximize).tolist() == [i for i, r in enumerate(expected) if r == 0]
    assert max(expected) >= 2  # the case exercises later fronts, not just the first


def test_duplicates_share_a_rank_and_nan_rows_are_never_ranked():
    points = [[0.9, 10.0], [0.9, 10.0], [0.8, 5.0], [float("nan"), 1.0], [0.7, 20.0]]
    assert non_dominated_ranks(points, [True, False]).tolist() == [0, 0, 0, -1, 1]


def test_all_nan_and_empty_inputs():
    assert non_dominated_ranks(np.full((3, 2), np.nan), [True, False]).tolist() == [-1, -1, -1]
    assert pareto_front(np.empty((0, 2)), [True, False]).tolist() == []


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="for 2 objectives"):
        non_dominated_ranks([[1.0, 2.0, 3.0]], [True, False])


# ------------------------------------------------------------------------------------ hypervolume
def test_hypervolume_of_a_staircase_by_hand():
    # accuracy up, MACs down; reference (accuracy 0, 10 MACs). Slabs along accuracy:
    # [0, 0.5] x (10 - 2) = 4, [0.5, 0.8] x (10 - 5) = 1.5, [0.8, 0.9] x (10 - 8) = 0.2
    points = [[0.5, 2.0], [0.8, 5.0], [0.9, 8.0]]
    assert hypervolume_2d(points, [True, False], reference=[0.0, 10.0]) == pytest.approx(5.7)


def test_dominated_duplicate_and_failed_points_add_nothing():
    front = [[0.5, 2.0], [0.8, 5.0], [0.9, 8.0]]
    noisy = front + [[0.6, 6.0], [0.8, 5.0], [float("nan"), 1.0], [0.95, float("nan")]]
    assert hypervolume_2d(noisy, [True, False], [0.0, 10.0]) == pytest.approx(5.7)


def test_points_beyond_the_reference_are_clipped():
    # (0.9, 12) costs more than the reference allows: no area; (0.5, 2) counts fully: 0.5 x 8
    assert hypervolume_2d([[0.5, 2.0], [0.9, 12.0]], [True, False], [0.0, 10.0]) == pytest.approx(4.0)


def test_default_reference_is_the_worst_of_each_objective():
    points = [[0.5, 2.0], [0.8, 5.0], [0.9, 8.0]]
    # reference (0.5, 8): only (0.8, 5) is strictly inside: (0.8 - 0.5) x (8 - 5) = 0.9
    assert hypervolume_2d(points, [True, False]) == pytest.approx(0.9)
    assert hypervolume_2d(points, [True, False]) == hypervolume_2d(points, [True, False], [0.5, 8.0])
    assert hypervolume_2d([[0.5, 2.0]], [True, False]) == 0.0
    assert hypervolume_2d(np.full((2, 2), np.nan), [True, False]) == 0.0


def test_both_minimized_and_both_maximized():
    # minimised, reference (4, 4): boxes [1,4]x[3,4] (3) and [2,4]x[1,4] (6) overlap in [2,4]x[3,4] (2)
    assert hypervolume_2d([[1.0, 3.0], [2.0, 1.0]], [False, False], [4.0, 4.0]) == pytest.approx(3 + 6 - 2)
    # maximised, reference (0, 0): boxes [0,3]x[0,1] (3) and [0,2]x[0,3] (6) overlap in [0,2]x[0,1] (2)
    assert hypervolume_2d([[3.0, 1.0], [2.0, 3.0]], [True, True], [0.0, 0.0]) == pytest.approx(3 + 6 - 2)


def grid_hypervolume(points, maximize, reference) -> float:
    """Exact union of the dominated boxes: split the plane at every coordinate, add the covered cells."""
    flip = np.where(np.asarray(maximize), -1.0, 1.0)
    costs = [p * flip for p in np.asarray(points, dtype=float) if not np.isnan(p).any()]
    bound = np.asarray(reference, dtype=float) * flip
    xs = sorted({min(c[0], bound[0]) for c in costs} | {bound[0]})
    ys = sorted({min(c[1], bound[1]) for c in costs} | {bound[1]})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(zip(xs, xs[1:]), zip(ys, ys[1:])):
        if any(c[0] <= x0 and c[1] <= y0 for c in costs):
            area += (x1 - x0) * (y1 - y0)
    return area


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("maximize", [(True, False), (False, False), (True, True)])
def test_hypervolume_matches_a_grid_of_cells(seed, maximize):
    points = random_points(seed, 30, 2)
    reference = [0.0 if up else 6.0 for up in maximize]
    assert hypervolume_2d(points, maximize, reference) == pytest.approx(grid_hypervolume(points, maximize, reference))


def test_hypervolume_needs_two_objectives():
    with pytest.raises(ValueError, match="exactly 2 objectives"):
        hypervolume_2d([[1.0, 2.0, 3.0]], [True, False, False])
