"""Small datasets held on the training device: arrays read once, resized, carved into splits.

Each batch is then gathered, augmented and normalised on the device, so the GPU never waits on Python
workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from chex_tune.train.data.dataset import STATS, Data
from chex_tune.train.data.splits import carve_split
from chex_tune.train.data.storage import TensorSplit

if TYPE_CHECKING:
    from chex_tune.config import TrainConfig

# train images (N, C, H, W) uint8, train labels (N,) int64, test images, test labels
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 images (N, C, H, H) resized to ``size`` once at load time (no-op when it matches)."""
    if images.shape[-1] == size:
        return images
    out = np.empty((*images.shape[:2], size, size), dtype=np.uint8)
    for start in range(0, len(images), 2048):  # in chunks: the float copy of a whole dataset is large
        chunk = torch.from_numpy(images[start:start + 2048]).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < images.shape[-1])
        out[start:start + 2048] = chunk.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def load_image_files(read: Callable[[str | None], Arrays], config: TrainConfig, device: torch.device, *,
                     num_classes: int) -> Data:
    """A dataset of image files: ``read(config.data_dir)``, resized to ``config.image_size`` (default: the
    files' own size), normalised with the dataset's ``STATS``."""
    train_images, train_labels, test_images, test_labels = read(config.data_dir)
    size = config.image_size or train_images.shape[-1]
    arrays = (resize(train_images, size), train_labels, resize(test_images, size), test_labels)
    return in_memory_data(arrays, config, device, num_classes=num_classes, val_size=config.val_size,
                          stats=STATS[config.dataset])


def in_memory_data(arrays: Arrays, config: TrainConfig, device: torch.device, *, num_classes: int,
                   val_size: int | None, stats) -> Data:
    """``arrays`` on ``device``: validation and training splits carved from the training arrays."""
    train_images, train_labels, test_images, test_labels = arrays
    train_idx, val_idx = carve_split(train_labels, val_size=val_size, train_subset=config.train_subset,
                                     dataset=config.dataset)
    train_images, train_labels = torch.from_numpy(train_images), torch.from_numpy(train_labels)
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return Data(name=config.dataset, num_classes=num_classes, mean=stats[0], std=stats[1], device=device,
                train=TensorSplit(train_images[train_idx], train_labels[train_idx], device),
                val=TensorSplit(train_images[val_idx], train_labels[val_idx], device),
                test=TensorSplit(torch.from_numpy(test_images), torch.from_numpy(test_labels), device))
