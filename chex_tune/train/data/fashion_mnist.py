"""Fashion-MNIST from its four idx files (gzip-compressed or unpacked), as Debian's dataset-fashion-mnist
installs them."""

from __future__ import annotations

import gzip
import math
import pathlib
import struct
from typing import TYPE_CHECKING

import numpy as np
import torch

from chex_tune.train.data.dataset import Data
from chex_tune.train.data.in_memory import Arrays, load_image_files

if TYPE_CHECKING:
    from chex_tune.config import TrainConfig

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs it
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_fashion_mnist(config: TrainConfig, device: torch.device) -> Data:
    """Fashion-MNIST from ``config.data_dir`` (default ``FASHION_MNIST_DIR``), 1x28x28 unless resized."""
    return load_image_files(read_fashion_mnist, config, device, num_classes=10)


def read_fashion_mnist(data_dir: str | None) -> Arrays:
    """Train images (60000, 1, 28, 28) uint8, their int64 labels, and the same for the test set."""
    directory = pathlib.Path(data_dir or FASHION_MNIST_DIR).expanduser().resolve()
    paths, missing = [], []
    for name in FASHION_MNIST_FILES:
        found = [p for p in (directory / f"{name}.gz", directory / name) if p.is_file()]  # gzip or unpacked
        paths.append(found[0] if found else None)
        if not found:
            missing.append(str(directory / f"{name}.gz"))
    if missing:
        raise ValueError(f"Fashion-MNIST not found: missing {', '.join(missing)}. Install it with "
                         f"`sudo apt-get install dataset-fashion-mnist` (it puts the four files in "
                         f"{FASHION_MNIST_DIR}), or pass --data-dir DIR with "
                         f"{', '.join(n + '.gz' for n in FASHION_MNIST_FILES)} in DIR")
    train_images, train_labels, test_images, test_labels = (read_idx(p) for p in paths)
    for images, labels, kind in ((train_images, train_labels, "train"), (test_images, test_labels, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"Fashion-MNIST {kind} files in {directory} do not match: images {images.shape}, "
                             f"labels {labels.shape}")
    return (train_images[:, None], train_labels.astype(np.int64),
            test_images[:, None], test_labels.astype(np.int64))


def read_idx(path: pathlib.Path) -> np.ndarray:
    """An idx file of uint8 data (gzip-compressed when it ends in .gz) as a writable array."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    # magic: two zero bytes, the data type (0x08 = unsigned byte), the number of dimensions
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex() or 'empty'})")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = struct.unpack(f">{dims}I", raw[4:header])  # big-endian sizes
    if len(raw) - header != math.prod(shape):
        raise ValueError(f"{path}: the header says {shape} ({math.prod(shape)} bytes) but {len(raw) - header} "
                         f"bytes follow it; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # frombuffer is read-only
