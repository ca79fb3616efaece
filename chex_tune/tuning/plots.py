"""Figures logged with sweeps: per-group widths of one compact model (the Pareto plot joins later)."""

from __future__ import annotations

import os


def plot_widths(widths: list[dict], path: str | os.PathLike, *, title: str = "") -> None:
    """Kept channels against original channels for every group, in network order."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and Ray workers
    import matplotlib.pyplot as plt

    names = [w["group"] for w in widths]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 4.0), layout="constrained")
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
    plt.close(fig)
