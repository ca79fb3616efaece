"""CIFAR-10 from either of its distributions, unpacked: the Python version (cifar-10-batches-py) or the
binary version (cifar-10-batches-bin). Nothing is ever downloaded.

The Python version's batches are pickles; they are read with :class:`ArrayUnpickler`, which refuses
every global but numpy's array constructors, never with ``pickle.load``.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from chex_tune.train.data.dataset import Data
from chex_tune.train.data.in_memory import Arrays, load_image_files
from chex_tune.train.data.unpickler import ArrayUnpickler

if TYPE_CHECKING:
    from chex_tune.config import TrainConfig

CIFAR10_DIR = "data"  # default root, relative to the working directory (torchvision's usual root)


def load_cifar10(config: TrainConfig, device: torch.device) -> Data:
    """CIFAR-10 from ``config.data_dir`` (default ``CIFAR10_DIR``), 3x32x32 unless resized."""
    return load_image_files(read_cifar10, config, device, num_classes=10)


def read_cifar10(data_dir: str | None) -> Arrays:
    """Train images (50000, 3, 32, 32) uint8, their int64 labels, and the same for the test set."""
    root = pathlib.Path(data_dir or CIFAR10_DIR).expanduser().resolve()
    # the torchvision root holding the extracted folder, or that folder itself
    for directory in (root / "cifar-10-batches-py", root):
        if (directory / "data_batch_1").is_file():
            return _read_parts(directory, "", _read_python_batch)
    for directory in (root / "cifar-10-batches-bin", root):
        if (directory / "data_batch_1.bin").is_file():
            return _read_parts(directory, ".bin", _read_binary_batch)
    looked = [root / "cifar-10-batches-py" / "data_batch_1", root / "cifar-10-batches-bin" / "data_batch_1.bin",
              root / "data_batch_1", root / "data_batch_1.bin"]
    raise ValueError(f"CIFAR-10 not found: looked for {', '.join(map(str, looked))}. Nothing is downloaded here: "
                     f"get cifar-10-python.tar.gz (or cifar-10-binary.tar.gz) from "
                     f"https://www.cs.toronto.edu/~kriz/cifar.html, unpack it into a directory DIR (giving "
                     f"DIR/cifar-10-batches-py or DIR/cifar-10-batches-bin) and pass --data-dir DIR")


def _read_parts(directory: pathlib.Path, suffix: str, read) -> Arrays:
    parts = [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]
    missing = [str(directory / p) for p in parts if not (directory / p).is_file()]
    if missing:
        raise ValueError(f"CIFAR-10 in {directory} is incomplete: missing {', '.join(missing)}")
    train = [read(directory / p) for p in parts[:5]]
    test_images, test_labels = read(directory / parts[5])
    return (np.concatenate([images for images, _ in train]), np.concatenate([labels for _, labels in train]),
            test_images, test_labels)


def _read_binary_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records (3073 bytes each)")
    records = raw.reshape(-1, 3073)  # a label byte, then 1024 red, 1024 green and 1024 blue pixel bytes
    return np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _read_python_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict of CIFAR-10 data and labels, got {type(batch).__name__}")
    # the original files are Python 2 pickles, whose str keys come back as bytes
    data, labels = (batch.get(key.encode(), batch.get(key)) for key in ("data", "labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: no 'data' and 'labels' entries (keys: {sorted(map(repr, batch))})")
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels
