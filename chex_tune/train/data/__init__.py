"""Datasets for the training loop: Fashion-MNIST, CIFAR-10, a folder of images, and a synthetic set.

    data = load_data(TrainConfig(dataset="fashion-mnist", train_subset=5000), device)
    for images, labels in data.train_batches(128, epoch=0, seed=0): ...
    for images, labels in data.eval_batches("val"): ...

Small datasets (all but ``imagefolder``) live on the training device as uint8 tensors: each batch is
gathered, augmented (random crop with padding and horizontal flip, vectorised over the whole batch)
and normalised there, so the GPU never waits on Python workers. ``imagefolder`` decodes and resizes
images in DataLoader workers and hands uint8 batches to the same device-side augmentation.

Reproducibility: an epoch's shuffle order and all its augmentation draws come from a CPU
``torch.Generator`` seeded from ``(seed, epoch)`` alone, so a run resumed at epoch e sees exactly the
batches an uninterrupted run sees, on CPU and CUDA alike, and the global RNG is never touched. The
validation split is carved from the training set, class-balanced, with a fixed seed independent of
the run's seed, so every run of a sweep is selected on the same images. Nothing is ever downloaded.

Modules: ``registry`` (``DATASETS``, ``load_data``), ``dataset`` (``Data``), one reader per dataset
(``fashion_mnist``, ``cifar10`` with ``unpickler``, ``imagefolder``, ``synthetic``), ``in_memory``
(arrays -> device splits), ``storage`` (the two kinds of split), ``splits`` (the fixed carve) and
``augmentation``.
"""

from __future__ import annotations

from chex_tune.train.data.augmentation import augment, epoch_generator
from chex_tune.train.data.cifar10 import read_cifar10
from chex_tune.train.data.dataset import STATS, Data
from chex_tune.train.data.fashion_mnist import read_fashion_mnist, read_idx
from chex_tune.train.data.in_memory import resize
from chex_tune.train.data.registry import DATASETS, load_data
from chex_tune.train.data.splits import SPLIT_SEED, balanced_counts, carve_split, default_val_size
from chex_tune.train.data.storage import FolderSplit, TensorSplit
from chex_tune.train.data.synthetic import read_synthetic
from chex_tune.train.data.unpickler import ArrayUnpickler

__all__ = [
    "DATASETS", "SPLIT_SEED", "STATS", "ArrayUnpickler", "Data", "FolderSplit", "TensorSplit", "augment",
    "balanced_counts", "carve_split", "default_val_size", "epoch_generator", "load_data", "read_cifar10",
    "read_fashion_mnist", "read_idx", "read_synthetic", "resize",
]
