from __future__ import annotations

import numpy as np
import pytest
import torch

from chex_tune.core.scoring import SCORERS, css_scores, get_scorer, l1_scores, top_k_indices


def _random(rows: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, n, generator=torch.Generator().manual_seed(seed))


def _leverage_reference(w: torch.Tensor, keep: int) -> np.ndarray:
    _, _, vh = np.linalg.svd(w.double().numpy(), full_matrices=False)
    return (vh[:keep] ** 2).sum(axis=0)


@pytest.mark.parametrize(
    ("rows", "n", "keep", "seed"), [(20, 8, 1, 0), (20, 8, 3, 1), (50, 12, 7, 2), (9, 7, 7, 3)]
)
def test_css_matches_float64_svd_reference(rows: int, n: int, keep: int, seed: int) -> None:
    w = _random(rows, n, seed)
    scores = css_scores(w, keep)
    assert scores.shape == (n,)
    assert scores.dtype == torch.float32
    assert scores.device == w.device
    np.testing.assert_allclose(scores.numpy(), _leverage_reference(w, keep), atol=1e-4)
    assert scores.sum().item() == pytest.approx(keep, abs=1e-4)


def test_css_upcasts_half_precision_to_float32() -> None:
    w = _random(16, 6, 4).half()
    scores = css_scores(w, 3)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, css_scores(w.float(), 3))


def test_css_keeps_independent_columns_over_near_duplicates() -> None:
    # Column 0 and its six half-size near-copies (6..11) share one direction; columns 1..5 are
    # independent but small. Each independent column has leverage ~1, the family splits one unit of
    # leverage by squared size (column 0: 1 / (1 + 6 * 0.25) = 0.4, each copy 0.1).
    rows, gen = 30, torch.Generator().manual_seed(5)
    base = torch.randn(rows, 1, generator=gen)
    independent = 0.3 * torch.randn(rows, 5, generator=gen)
    copies = 0.5 * base + 1e-3 * torch.randn(rows, 6, generator=gen)
    w = torch.cat([base, independent, copies], dim=1)

    css = css_scores(w, 6)
    assert top_k_indices(css, 6).tolist() == [0, 1, 2, 3, 4, 5]
    torch.testing.assert_close(css[1:6], torch.ones(5), atol=1e-3, rtol=0)
    torch.testing.assert_close(css[0], torch.tensor(0.4), atol=1e-2, rtol=0)
    # Magnitude alone would keep the redundant family instead.
    assert top_k_indices(l1_scores(w, 6), 6).tolist() == [0, 6, 7, 8, 9, 10]


def test_css_falls_back_to_l1_when_fewer_rows_than_keep() -> None:
    w = _random(3, 8, 6)
    torch.testing.assert_close(css_scores(w, 5), l1_scores(w, 5), rtol=0, atol=0)


def test_css_falls_back_to_l1_when_keep_exceeds_rank() -> None:
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(20, 2, generator=gen) @ torch.randn(2, 8, generator=gen)  # rank 2, 20 rows
    torch.testing.assert_close(css_scores(w, 4), l1_scores(w, 4), rtol=0, atol=0)
    assert css_scores(w, 2).sum().item() == pytest.approx(2.0, abs=1e-4)  # keep == rank: still leverage


def test_css_of_zero_matrix_is_zero() -> None:
    torch.testing.assert_close(css_scores(torch.zeros(10, 4), 2), torch.zeros(4), rtol=0, atol=0)


def test_l1_values() -> None:
    w = torch.tensor([[1.0, -2.0, 0.0], [-3.0, 0.5, 0.0]], dtype=torch.float64)
    scores = l1_scores(w, 1)
    assert scores.dtype == torch.float32
    assert scores.tolist() == [4.0, 2.5, 0.0]


@pytest.mark.parametrize(
    ("scores", "k", "expected"),
    [
        ([1.0, 3.0, 3.0, 0.0, 3.0], 2, [1, 2]),
        ([1.0, 3.0, 3.0, 0.0, 3.0], 3, [1, 2, 4]),
        ([1.0, 3.0, 3.0, 0.0, 3.0], 4, [0, 1, 2, 4]),
        ([0.0, 0.0, 0.0, 0.0], 2, [0, 1]),
        ([0.0, 5.0, 1.0, 9.0], 2, [1, 3]),
        ([0.0, 5.0, 1.0, 9.0], 0, []),
    ],
)
def test_top_k_indices_breaks_ties_towards_lower_index(
    scores: list[float], k: int, expected: list[int]
) -> None:
    indices = top_k_indices(torch.tensor(scores), k)
    assert indices.dtype == torch.int64
    assert indices.tolist() == expected


@pytest.mark.parametrize("k", [-1, 5])
def test_top_k_indices_rejects_bad_k(k: int) -> None:
    with pytest.raises(ValueError, match=rf"k must be in \[0, 4\].*got {k}"):
        top_k_indices(torch.zeros(4), k)


@pytest.mark.parametrize("scorer", [css_scores, l1_scores])
@pytest.mark.parametrize("keep", [0, -2, 6])
def test_scorers_reject_keep_outside_range(scorer, keep: int) -> None:
    with pytest.raises(ValueError, match=rf"keep must be in \[1, 5\].*got {keep}"):
        scorer(torch.ones(8, 5), keep)


@pytest.mark.parametrize("scorer", [css_scores, l1_scores])
def test_scorers_reject_non_matrix_filters(scorer) -> None:
    with pytest.raises(ValueError, match=r"2-D.*\(2, 3, 4\)"):
        scorer(torch.ones(2, 3, 4), 1)


def test_get_scorer_by_name() -> None:
    assert get_scorer("css") is css_scores
    assert get_scorer("l1") is l1_scores
    assert set(SCORERS) == {"css", "l1"}


def test_get_scorer_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown scorer 'foo'; choose one of: css, l1"):
        get_scorer("foo")
