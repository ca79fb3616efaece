"""Figures logged with sweeps: per-group widths of one compact model, and a sweep's Pareto front."""

from __future__ import annotations

import os

from chex_tune.train.metrics import MACS, VAL_ACC, metric


def plot_widths(widths: list[dict], path: str | os.PathLike, *, title: str = "") -> None:
    """Kept channels against original channels for every group, in network order."""
    names = [w["group"] for w in widths]
    fig, ax = _figure((max(6.0, 0.28 * len(names) + 2), 4.0))
    positions = range(len(names))
    ax.bar(positions, [w["channels"] for w in widths], color="#d0d7e1", label="original channels")
    ax.bar(positions, [w["width"] for w in widths], color="#2f6db5", label="kept (compact model)")
    for x, w in zip(positions, widths):
        if not w.get("prunable", True):
            ax.annotate("dense", (x, w["channels"]), ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(list(positions), names, rotation=90, fontsize=6)
    ax.set_ylabel("channels")
    ax.set_xlabel("channel group (root layer)")
    ax.set_title(title or "channel widths per group")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def _figure(size):
    """A figure drawn straight to a file: no pyplot, so the user's matplotlib backend and figures stay as they are."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def is_dense_baseline(params: dict) -> bool:
    """A run that pruned nothing: sparsity 0 and no MACs budget (MLflow keeps every setting as text)."""
    try:
        sparsity = float(params.get("sparsity", "nan"))
    except ValueError:
        return False
    return sparsity == 0.0 and params.get("macs_target") in (None, "", "None")


def plot_pareto(rows: list, path: str | os.PathLike, *, x: str = MACS, y: str = VAL_ACC, title: str = "") -> None:
    """Every finished trial as a dot, the front (rank 0) highlighted and joined as a staircase.

    ``rows`` are ``TrialRow``s. The staircase steps right then up (cost minimised, accuracy
    maximised): everything below and to the right of it is dominated. Dense baselines get a star.
    """
    (x_label, x_scale), (y_label, y_scale) = ((metric(n).axis, metric(n).axis_scale) for n in (x, y))
    shown = [r for r in rows if r.finished and x in r.metrics and y in r.metrics]

    def coords(subset):
        return ([r.metrics[x] * x_scale for r in subset], [r.metrics[y] * y_scale for r in subset])

    front = sorted((r for r in shown if r.rank == 0), key=lambda r: r.metrics[x])
    others = [r for r in shown if r.rank != 0]
    dense = [r for r in shown if is_dense_baseline(r.params)]
    fig, ax = _figure((6.4, 4.4))
    ax.scatter(*coords(others), s=22, color="#9aa5b1", label=f"other trials ({len(others)})", zorder=2)
    if front:
        ax.step(*coords(front), where="post", color="#2f6db5", linewidth=1.2, zorder=3)
        ax.scatter(*coords(front), s=40, color="#2f6db5", edgecolor="black", linewidth=0.5,
                   label=f"Pareto front ({len(front)})", zorder=4)
    if dense:
        ax.scatter(*coords(dense), s=160, marker="*", color="#e8a33d", edgecolor="black", linewidth=0.5,
                   label="dense baseline (sparsity 0)", zorder=5)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title or "Pareto front", fontsize=10)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, dpi=120)
