"""A synthetic dataset: learnable in a few epochs, no files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from chex_tune.train.data.dataset import Data
from chex_tune.train.data.in_memory import Arrays, in_memory_data
from chex_tune.train.data.splits import default_val_size

if TYPE_CHECKING:
    from chex_tune.config import TrainConfig

SYNTHETIC_SEED = 1234
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_SIZE = 1024, 256, 16


def load_synthetic(config: TrainConfig, device: torch.device) -> Data:
    """:func:`read_synthetic`'s images, normalised with their own measured mean and std."""
    arrays = read_synthetic(config)
    # synthetic makes exactly the images asked for: the validation images on top of the training ones
    val_size = len(arrays[1]) - (config.train_subset or SYNTHETIC_TRAIN)
    return in_memory_data(arrays, config, device, num_classes=10, val_size=val_size,
                          stats=_measured_stats(arrays[0]))


def read_synthetic(config: TrainConfig) -> Arrays:
    """10 classes of noisy copies of a smooth random pattern per class: learnable in a few epochs, no files.

    Fixed seeds independent of ``config.seed``; the training pool holds the training images asked for
    (``train_subset`` or 1024) plus the validation images, so the carve leaves exactly the former.
    """
    size = config.image_size or SYNTHETIC_SIZE
    train_n = config.train_subset or SYNTHETIC_TRAIN
    val_n = config.val_size if config.val_size is not None else default_val_size(2 * train_n, train_n)
    patterns = torch.Generator().manual_seed(SYNTHETIC_SEED)
    # low frequency: a 4x4 random pattern per class and channel, upsampled
    prototypes = F.interpolate(torch.rand(10, 3, 4, 4, generator=patterns), size=(size, size), mode="bilinear",
                               align_corners=False)

    def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        labels = torch.arange(n) % 10
        noise = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
        pixels = 40 + 175 * prototypes[labels] + 60 * noise  # quantised to uint8 like real images
        return pixels.round().clamp(0, 255).to(torch.uint8).numpy(), labels.numpy()

    # separate noise seeds: the test set stays the same whatever the training set's size
    return (*draw(train_n + val_n, SYNTHETIC_SEED + 1), *draw(SYNTHETIC_TEST, SYNTHETIC_SEED + 2))


def _measured_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pixels = torch.from_numpy(images).float().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())
