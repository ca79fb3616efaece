from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from chex_tune.core.regrow import (
    SAMPLERS,
    get_sampler,
    projection_residuals,
    sample_projection,
    sample_uniform,
)

CHI2_999 = {3: 16.27, 5: 20.52}  # 99.9% quantiles of the chi-square distribution by degrees of freedom


def _idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def _random(rows: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, n, generator=torch.Generator().manual_seed(seed))


def _residual_reference(w: torch.Tensor, kept: torch.Tensor) -> np.ndarray:
    a = w.double().numpy()
    a_kept = a[:, kept.numpy()]
    projector = a_kept @ np.linalg.pinv(a_kept, rtol=1e-10)
    return ((a - projector @ a) ** 2).sum(axis=0)


def _with_columns(w: torch.Tensor, **columns: torch.Tensor) -> torch.Tensor:
    w = w.clone()
    for name, value in columns.items():
        w[:, int(name.removeprefix("c"))] = value
    return w


_W = _random(10, 8, 0)
_CASES = {
    "full-rank": (_W, _idx(1, 4, 6)),
    "duplicate kept column": (_with_columns(_W, c3=_W[:, 1]), _idx(1, 3, 5)),
    "leading zero kept column": (_with_columns(_W, c2=torch.zeros(10)), _idx(2, 0, 5)),
    "more kept than rows": (_random(4, 9, 1), _idx(0, 2, 3, 5, 7, 8)),
    "single kept": (_W, _idx(7)),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_residuals_match_pinv_reference(case: str) -> None:
    w, kept = _CASES[case]
    residuals = projection_residuals(w, kept)
    assert residuals.shape == (w.shape[1],)
    assert residuals.dtype == torch.float32
    energy = w.square().sum(dim=0).max().item()
    np.testing.assert_allclose(residuals.numpy(), _residual_reference(w, kept), rtol=1e-4, atol=1e-4 * energy)
    assert (residuals[kept] == 0).all()


def test_residuals_in_float64_for_float64_input() -> None:
    w, kept = _CASES["duplicate kept column"]
    residuals = projection_residuals(w.double(), kept)
    assert residuals.dtype == torch.float64
    np.testing.assert_allclose(residuals.numpy(), _residual_reference(w, kept), rtol=1e-9, atol=1e-9)


def test_residuals_without_kept_are_squared_norms() -> None:
    w = _random(6, 5, 2)
    residuals = projection_residuals(w, torch.empty(0, dtype=torch.int64))
    torch.testing.assert_close(residuals, w.square().sum(dim=0))


def test_residuals_of_columns_in_the_kept_span_are_exactly_zero() -> None:
    w = _random(3, 7, 3)  # any 3 independent columns span all of R^3
    assert projection_residuals(w, _idx(0, 1, 2)).tolist() == [0.0] * 7


def _planted(eps: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns 0, 1 (kept) span e0, e1; column 2 + i has residual eps[i]; the last column lies in the span."""
    m = len(eps)
    rows = 2 + m
    gen = torch.Generator().manual_seed(11)
    w = torch.zeros(rows, m + 3)
    w[0, 0] = 1.0
    w[1, 1] = 1.0
    w[:2, 2 : 2 + m] = torch.randn(2, m, generator=gen)  # in-span parts do not count
    w[2:, 2 : 2 + m] = torch.diag(torch.tensor(eps).sqrt())
    w[:2, -1] = torch.tensor([2.0, -1.0])
    return w, _idx(0, 1)


def test_planted_residuals() -> None:
    w, kept = _planted([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(projection_residuals(w, kept), torch.tensor([0, 0, 1.0, 2.0, 3.0, 4.0, 0]))


def test_single_draw_frequencies_follow_residuals() -> None:
    eps = [1.0, 2.0, 3.0, 4.0]
    w, kept = _planted(eps)
    gen = torch.Generator().manual_seed(0)
    draws = 2000
    picks = [sample_projection(w, kept, 1, gen).item() for _ in range(draws)]
    counts = np.bincount(picks, minlength=w.shape[1])
    assert counts[[0, 1, 6]].tolist() == [0, 0, 0]  # kept, or in the kept span
    observed = counts[2:6]
    assert (np.diff(observed) > 0).all()
    expected = draws * np.array(eps) / sum(eps)
    assert ((observed - expected) ** 2 / expected).sum() < CHI2_999[3]


def test_pair_frequencies_follow_sequential_draw_semantics() -> None:
    # Without replacement, P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j): not proportional to p_i p_j.
    eps = [1.0, 2.0, 3.0, 4.0]
    w, kept = _planted(eps)
    p = dict(zip(range(2, 6), np.array(eps) / sum(eps), strict=True))
    pairs = list(itertools.combinations(range(2, 6), 2))
    gen = torch.Generator().manual_seed(1)
    draws = 4000
    observed = dict.fromkeys(pairs, 0)
    for _ in range(draws):
        pick = sample_projection(w, kept, 2, gen).tolist()
        assert len(pick) == 2 and pick[0] < pick[1]
        observed[tuple(pick)] += 1
    assert sum(observed.values()) == draws  # never a kept or zero-residual column
    expected = {(i, j): draws * (p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])) for i, j in pairs}
    assert sum((observed[q] - expected[q]) ** 2 / expected[q] for q in pairs) < CHI2_999[5]


def test_multi_draws_are_distinct_sorted_and_never_kept() -> None:
    w = _random(12, 20, 4)
    kept = _idx(3, 8, 9, 15, 19)
    gen = torch.Generator().manual_seed(2)
    for count in (1, 4, 10, 15):
        pick = sample_projection(w, kept, count, gen)
        assert pick.dtype == torch.int64
        assert pick.numel() == count
        assert pick.tolist() == sorted(set(pick.tolist()))
        assert not set(pick.tolist()) & set(kept.tolist())


def test_same_seed_gives_identical_draws() -> None:
    w = _random(12, 20, 5)
    kept = _idx(0, 5, 6)

    def run(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return [sample_projection(w, kept, 5, gen).tolist() for _ in range(10)]

    assert run(123) == run(123)
    assert run(123) != run(124)


def test_positive_residuals_first_then_uniform_fill_in() -> None:
    w, kept = _planted([1.0, 2.0, 3.0, 4.0])
    assert sample_projection(w, kept, 4, torch.Generator().manual_seed(0)).tolist() == [2, 3, 4, 5]
    assert sample_projection(w, kept, 5, torch.Generator().manual_seed(0)).tolist() == [2, 3, 4, 5, 6]


def test_fill_in_is_uniform_when_every_candidate_lies_in_the_kept_span() -> None:
    w = _random(3, 8, 6)
    kept = _idx(1, 4, 6)  # spans R^3: every residual is 0
    gen = torch.Generator().manual_seed(3)
    counts = np.zeros(8, dtype=int)
    for _ in range(1000):
        pick = sample_projection(w, kept, 2, gen)
        assert pick.numel() == 2 and pick[0] < pick[1]
        counts[pick.numpy()] += 1
    assert counts[kept.numpy()].tolist() == [0, 0, 0]
    expected = 1000 * 2 / 5
    assert ((counts[[0, 2, 3, 5, 7]] - expected) ** 2 / expected).sum() < 18.47  # chi-square 99.9%, 4 dof


def test_uniform_sampler_is_distinct_never_kept_and_roughly_uniform() -> None:
    w = _random(4, 10, 7)
    kept = _idx(0, 2, 9)
    gen = torch.Generator().manual_seed(4)
    counts = np.zeros(10, dtype=int)
    for _ in range(700):
        pick = sample_uniform(w, kept, 3, gen)
        assert pick.dtype == torch.int64
        assert pick.tolist() == sorted(set(pick.tolist())) and pick.numel() == 3
        counts[pick.numpy()] += 1
    assert counts[kept.numpy()].tolist() == [0, 0, 0]
    expected = 700 * 3 / 7
    chi2 = ((counts[[1, 3, 4, 5, 6, 7, 8]] - expected) ** 2 / expected).sum()
    assert chi2 < 22.46  # chi-square 99.9%, 6 dof


@pytest.mark.parametrize("sampler", [sample_projection, sample_uniform])
def test_count_zero_gives_empty_int64(sampler) -> None:
    pick = sampler(_random(4, 6, 8), _idx(1), 0, torch.Generator().manual_seed(0))
    assert pick.dtype == torch.int64
    assert pick.shape == (0,)


@pytest.mark.parametrize("sampler", [sample_projection, sample_uniform])
@pytest.mark.parametrize("count", [-1, 5])
def test_count_outside_candidates_is_rejected(sampler, count: int) -> None:
    with pytest.raises(ValueError, match=rf"count must be in \[0, 4\].*got {count}"):
        sampler(_random(4, 6, 9), _idx(1, 3), count, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        (_idx(0, 6), r"kept indices must be in \[0, 5\], got \[6\]"),
        (_idx(2, 2), "kept indices must be distinct"),
    ],
)
def test_bad_kept_is_rejected(kept: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        projection_residuals(_random(4, 6, 10), kept)


def test_get_sampler_by_name() -> None:
    assert get_sampler("projection") is sample_projection
    assert get_sampler("uniform") is sample_uniform
    assert set(SAMPLERS) == {"projection", "uniform"}


def test_get_sampler_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown regrowth sampler 'x'; choose one of: projection, uniform"):
        get_sampler("x")
