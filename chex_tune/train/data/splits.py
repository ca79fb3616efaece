"""The fixed splits: a class-balanced validation carve from the training set, then a class-balanced
training subset from the rest.

Both are drawn with ``SPLIT_SEED``, independent of the run's seed, so every run of a sweep is selected
on the same images.
"""

from __future__ import annotations

import math

import numpy as np

SPLIT_SEED = 0  # the validation carve and train_subset draw: fixed, so all runs see the same images


def default_val_size(available: int, train_subset: int | None) -> int:
    """10% of the training images used, clamped to [500, 5000], never more than half of those available."""
    used = available if train_subset is None else train_subset
    return min(max(used // 10, 500), 5000, available // 2)


def carve_split(labels: np.ndarray, *, val_size: int | None, train_subset: int | None,
                dataset: str = "the dataset") -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) into ``labels``: a class-balanced validation split, then ``train_subset``
    class-balanced training images from the rest (all of the rest when None), both drawn with the fixed
    ``SPLIT_SEED``. Growing ``train_subset`` keeps the smaller draw's images."""
    labels = np.asarray(labels)
    available = len(labels)
    if val_size is None:
        val_size = default_val_size(available, train_subset)
    if val_size >= available:
        raise ValueError(f"val_size {val_size} leaves no training images: {dataset} has {available} training images; "
                         f"use a smaller --val-size")
    left = available - val_size
    if train_subset is not None and train_subset > left:
        raise ValueError(f"train_subset {train_subset} is larger than the {left} training images available "
                         f"({dataset} has {available}, {val_size} of them carved off for validation); "
                         f"use --train-subset {left} or less")
    rng = np.random.default_rng(SPLIT_SEED)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    val_counts = balanced_counts([len(p) for p in pools], val_size)
    rest = [len(p) - k for p, k in zip(pools, val_counts)]
    train_counts = balanced_counts(rest, left if train_subset is None else train_subset)
    val = np.concatenate([p[:k] for p, k in zip(pools, val_counts)])
    train = np.concatenate([p[v:v + k] for p, v, k in zip(pools, val_counts, train_counts)])
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def balanced_counts(available: list[int], total: int) -> list[int]:
    """How many of ``total`` to take from each class: as equal as possible, none more than it has.

    Classes are filled smallest first, each taking its fair share of what is still needed (rounded
    up, so a remainder goes one each to the first classes); a class too small for its share gives
    the shortfall to the larger classes after it.
    """
    if total > sum(available):
        raise ValueError(f"cannot take {total} images from {sum(available)}")
    counts = [0] * len(available)
    remaining = total
    order = sorted(range(len(available)), key=lambda c: available[c])  # stable: ties by class index
    for k, c in enumerate(order):
        counts[c] = min(available[c], math.ceil(remaining / (len(order) - k)))
        remaining -= counts[c]
    return counts
