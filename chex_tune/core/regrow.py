"""Regrowth samplers: which pruned channels to bring back at an exploration step.

Pruning by itself is greedy: a channel dropped early never gets a second chance. CHEX therefore
regrows some pruned channels, preferring those that the kept channels represent worst, i.e. those with
the largest residual after projecting their filters onto the span of the kept filters. Every sampler
has the signature ``(filters, kept, count, generator) -> indices`` on a ``[rows, n]`` filter matrix (see
:mod:`chex_tune.core.scoring`) and returns ``count`` distinct, sorted, never-kept channel indices.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SAMPLERS", "get_sampler", "projection_residuals", "sample_projection", "sample_uniform"]


def _candidates(filters: Tensor, kept: Tensor) -> Tensor:
    """Sorted int64 CPU indices of the channels not in ``kept``, after validating both arguments."""
    if filters.dim() != 2:
        raise ValueError(f"filters must be a 2-D [rows, n] matrix, got shape {tuple(filters.shape)}")
    n = filters.shape[1]
    integral = not (kept.is_floating_point() or kept.is_complex() or kept.dtype == torch.bool)
    if kept.dim() != 1 or (kept.numel() and not integral):
        raise ValueError(f"kept must be a 1-D integer index tensor, got {kept.dtype} {tuple(kept.shape)}")
    kept = kept.long().cpu()
    outside = kept[(kept < 0) | (kept >= n)]
    if outside.numel():
        raise ValueError(f"kept indices must be in [0, {n - 1}], got {outside.tolist()}")
    if kept.unique().numel() != kept.numel():
        raise ValueError(f"kept indices must be distinct, got {kept.numel() - kept.unique().numel()} repeats")
    mask = torch.ones(n, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().squeeze(1)


def _check_count(count: int, available: int) -> None:
    if not 0 <= count <= available:
        raise ValueError(f"count must be in [0, {available}] (the number of non-kept channels), got {count}")


def projection_residuals(filters: Tensor, kept: Tensor) -> Tensor:
    """Squared residual of each column after projection onto the span of the kept columns.

    ``eps_j = ||w_j - P w_j||^2`` with ``P`` the orthogonal projector onto ``span(W[:, kept])``. It is
    what the kept channels cannot express of channel ``j``: large means regrowing ``j`` adds a new
    direction, zero means ``j`` is redundant given the kept set.

    Computed in the Gram domain, where every product is n x n or smaller however tall ``W`` is (a
    wide layer's filters have thousands of rows): with ``G = W^T W``, ``||P w_j||^2 = g_j^T G_TT^+ g_j``
    for ``g_j = G[kept, j]``, and ``G_TT^+`` comes from an eigendecomposition of the small kept block
    in float64. This is ~10x cheaper than a QR of the tall ``W[:, kept]`` at the same result: a
    rank-deficient kept set (duplicates, zeros, more kept columns than rows) is handled by dropping
    eigenvalues at or below ``max(W.shape) * eps * lambda_max`` (numerically zero directions).

    The residual is an energy minus a projected energy, so its rounding noise scales with the energy:
    residuals at or below ``TOLERANCE * ||w_j||^2`` are set to exactly 0, so that samplers treat such
    columns as redundant. Kept columns are exactly 0; an empty ``kept`` gives the squared column norms.
    The Gram product runs in ``filters``' precision (float32, or float64 for float64 input) on its
    device; the result is float32 (float64 for float64 input) there.
    """
    _candidates(filters, kept)
    dtype = torch.float64 if filters.dtype == torch.float64 else torch.float32
    w = filters.to(dtype)
    energy = w.square().sum(dim=0)
    kept = kept.long().to(w.device)
    if kept.numel() == 0:
        return energy
    cross = (w[:, kept].T @ w).double()  # G[kept, :], k x n
    projected = _projected_energy(cross, cross[:, kept], limit=max(w.shape) * torch.finfo(dtype).eps)
    residuals = (energy.double() - projected).clamp_min(0).to(dtype)
    residuals[residuals <= _tolerance(dtype) * energy] = 0.0
    residuals[kept] = 0.0
    return residuals


def _projected_energy(cross: Tensor, block: Tensor, *, limit: float) -> Tensor:
    """``g_j^T block^+ g_j`` for every column ``g_j`` of ``cross``: a Cholesky solve when the kept block
    is well conditioned (the usual case, and ~10x cheaper), else an eigendecomposition that drops the
    numerically zero directions (eigenvalues at or below ``limit * lambda_max``)."""
    block = (block + block.T) / 2
    diagonal = block.diagonal()
    factor, info = torch.linalg.cholesky_ex(block)
    if info == 0 and bool((factor.diagonal().square() > limit * diagonal.max()).all()):
        return torch.linalg.solve_triangular(factor, cross, upper=False).square().sum(dim=0)
    values, vectors = torch.linalg.eigh(block)
    keep = values > values.max().clamp_min(0) * limit
    return ((vectors[:, keep] / values[keep].sqrt()).T @ cross).square().sum(dim=0)


def _tolerance(dtype: torch.dtype) -> float:
    """Relative residual energy below which a column counts as inside the kept span (rounding noise)."""
    return 1e4 * torch.finfo(dtype).eps  # ~1e-3 in float32, ~2e-12 in float64


def sample_projection(filters: Tensor, kept: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Draw ``count`` non-kept channels without replacement, with probability proportional to ``eps_j``.

    The draws follow sequential semantics (draw one with ``p_j ~ eps_j``, remove it, renormalise,
    repeat), implemented in one pass with the Efraimidis-Spirakis keys ``log(u_j) / eps_j``: the
    ``count`` largest keys form such a sample. The uniforms ``u`` come from ``generator`` on the CPU
    (so it must be a CPU generator), which makes the draw identical whatever device ``filters`` is on.

    Channels with ``eps_j = 0`` lie in the kept span and would add nothing; they are only taken when
    fewer than ``count`` channels have a positive residual, and then uniformly at random.
    Returns sorted int64 indices on the CPU.
    """
    candidates = _candidates(filters, kept)
    _check_count(count, candidates.numel())
    if count == 0:
        return candidates[:0]
    u = torch.rand(filters.shape[1], generator=generator, dtype=torch.float64)
    eps = projection_residuals(filters, kept).double().cpu()[candidates]
    positive = candidates[eps > 0]
    keys = u[positive].log() / eps[eps > 0]
    chosen = positive[torch.argsort(keys, descending=True, stable=True)[:count]]
    missing = count - chosen.numel()
    if missing:
        redundant = candidates[eps == 0]
        fill = redundant[torch.randperm(redundant.numel(), generator=generator)[:missing]]
        chosen = torch.cat([chosen, fill])
    return torch.sort(chosen).values


def sample_uniform(filters: Tensor, kept: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Draw ``count`` non-kept channels uniformly without replacement: the ablation baseline for
    :func:`sample_projection`, showing what the residual weighting buys. Returns sorted int64 CPU indices.
    """
    candidates = _candidates(filters, kept)
    _check_count(count, candidates.numel())
    chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]
    return torch.sort(chosen).values


SAMPLERS: dict[str, Callable[[Tensor, Tensor, int, torch.Generator], Tensor]] = {
    "projection": sample_projection,
    "uniform": sample_uniform,
}


def get_sampler(name: str) -> Callable[[Tensor, Tensor, int, torch.Generator], Tensor]:
    """Look a regrowth sampler up by the name used in configs, failing loudly with the valid choices."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown regrowth sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None
