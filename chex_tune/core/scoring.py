"""Intra-group channel scorers: which channels of a coupled group are most worth keeping.

A *filter matrix* ``W`` has shape ``[rows, n]``: column ``j`` holds channel ``j``'s flattened filters,
stacked over every layer that produces that channel, so one score covers the whole coupled group.
Higher score = more worth keeping. Every scorer has the signature ``(filters, keep) -> scores``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from chex_tune.core.groups import ChannelGroup
    from chex_tune.core.masks import MaskState

__all__ = ["INITIAL_SCORERS", "SCORERS", "css_scores", "get_scorer", "l1_scores", "top_k_indices"]


def _check(filters: Tensor, keep: int) -> None:
    if filters.dim() != 2:
        raise ValueError(f"filters must be a 2-D [rows, n] matrix, got shape {tuple(filters.shape)}")
    n = filters.shape[1]
    if not 1 <= keep <= n:
        raise ValueError(f"keep must be in [1, {n}] (the number of channels), got {keep}")


def l1_scores(filters: Tensor, keep: int) -> Tensor:
    """L1 norm of each channel's filters (``keep`` is unused; it is there to share the scorer signature).

    The classic magnitude criterion: cheap, and the fallback of :func:`css_scores` when leverage scores
    carry no information.
    """
    _check(filters, keep)
    return filters.float().abs().sum(dim=0)


def css_scores(filters: Tensor, keep: int) -> Tensor:
    """Column subset selection leverage scores of the top-``keep`` right singular subspace.

    ``score_j = ||V_k[j]||^2`` where ``V_k`` holds the top-``keep`` right singular vectors of ``W``. A
    column whose direction is shared by many others (a near-duplicate channel) splits its leverage with
    them, so CSS prefers channels that span distinct directions over merely large ones, which is what
    makes the kept subset a good low-rank approximation of the whole layer. The scores sum to ``keep``.

    Degenerate case: when ``keep`` exceeds the numerical rank of ``W`` (always so when ``W`` has fewer
    rows than ``keep``), the top-``keep`` subspace contains null directions chosen arbitrarily by the
    SVD, and leverage scores stop distinguishing channels. We then fall back to :func:`l1_scores`, as the
    CHEX authors do.

    The right singular vectors come from an eigendecomposition of the Gram matrix ``W^T W`` (n x n)
    rather than an SVD of ``W``: the same subspace, about 40x faster for the tall matrices of wide
    layers (0.9 s instead of 37 s for 2560 x 2048 on 2 CPU cores). The product runs in the filters'
    precision (float32 for float32 weights: the costly part, half the time of float64) and the
    eigendecomposition in float64. Runs on ``filters``' device; returns a float32 ``[n]`` tensor there.
    """
    _check(filters, keep)
    if filters.shape[0] < keep:  # rank <= rows < keep: skip the decomposition
        return l1_scores(filters, keep)
    w = filters if filters.dtype == torch.float64 else filters.float()
    eigenvalues, eigenvectors = torch.linalg.eigh(w.T @ w)  # ascending
    # Numerical rank: a float32 Gram product leaves ~eps * lambda_max where the exact eigenvalue is 0.
    rank = int((eigenvalues > eigenvalues[-1] * max(filters.shape) * torch.finfo(w.dtype).eps).sum())
    if keep > rank:
        return l1_scores(filters, keep)
    return eigenvectors[:, -keep:].square().sum(dim=1).float()


SCORERS: dict[str, Callable[[Tensor, int], Tensor]] = {"css": css_scores, "l1": l1_scores}


def get_scorer(name: str) -> Callable[[Tensor, int], Tensor]:
    """Look a scorer up by the name used in configs, failing loudly with the valid choices."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of: {', '.join(SCORERS)}") from None


def _initial_l1(state: MaskState, group: ChannelGroup, width: int) -> Tensor:
    return l1_scores(state.unit_filters(group), width).cpu()


def _initial_magnitude(state: MaskState, group: ChannelGroup, width: int) -> Tensor:
    return state.unit_magnitudes(group)


# How the first mask (uniform widths, before any training) picks a group's ``width`` units: (state, group, width) ->
# one score per unit. "l1": each unit's filter L1 norm; "magnitude": the L2 norm of every parameter coupled to it
# (Torch-Pruning's group magnitude: for trained starts).
INITIAL_SCORERS: dict[str, Callable[[MaskState, ChannelGroup, int], Tensor]] = {
    "l1": _initial_l1, "magnitude": _initial_magnitude}


def top_k_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores, as a sorted int64 tensor.

    Ties go to the lower index (a stable sort of ``-scores``) so that pruning is reproducible across
    runs and devices, e.g. when many channels are all-zero and score exactly 0.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    n = scores.shape[0]
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}] (the number of scores), got {k}")
    order = torch.sort(-scores, stable=True).indices
    return torch.sort(order[:k]).values.long()
