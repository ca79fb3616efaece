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
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import math
import pathlib
import pickle
import struct
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from chex_tune.config import TrainConfig

SPLIT_SEED = 0  # the validation carve and train_subset draw: fixed, so all runs see the same images
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs it
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_DIR = "data"  # default root, relative to the working directory (torchvision's usual root)
SYNTHETIC_SEED = 1234
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_SIZE = 1024, 256, 16
IMAGEFOLDER_SIZE = 224
IMAGEFOLDER_LAYOUT = ("DIR/train/<class>/<image> for training (the validation split is carved from it) and "
                      "DIR/test/<class>/<image> (or DIR/val/<class>/<image>) for the test set")

# per-channel mean and std of the pixels scaled to [0, 1]
STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}


# ------------------------------------------------------------------------------------ the data object
class _TensorSplit:
    """A split held as one uint8 tensor (N, C, H, W) on the device, int64 labels beside it."""

    def __init__(self, images: Tensor, labels: Tensor, device: torch.device):
        self.images = images.to(device)
        self.labels = labels.to(device=device, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: Tensor | None, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if order is None:
            for start in range(0, len(self), batch_size):
                yield self.images[start:start + batch_size], self.labels[start:start + batch_size]
            return
        order = order.to(self.images.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index]

    def take(self, n: int) -> Tensor:
        return self.images[:n]


class _FolderSplit:
    """A split decoded from disk by DataLoader workers (uint8 tensors of equal size, moved to the device)."""

    def __init__(self, dataset, num_workers: int, device: torch.device):
        self.dataset = dataset
        self.num_workers = num_workers
        self.device = device

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, order: Tensor | None, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=None if order is None else order.tolist(),
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            # the loader draws its workers' base seed from this generator; without one it would draw from
            # the global RNG and shift the training run's random stream (the workers themselves draw nothing)
            generator=torch.Generator().manual_seed(0))
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def take(self, n: int) -> Tensor:
        return torch.stack([self.dataset[i][0] for i in range(min(n, len(self)))]).to(self.device)


class Data:
    """One dataset's train/val/test splits on a device, with deterministic augmented training batches."""

    def __init__(self, *, name: str, num_classes: int, mean, std, train, val, test, device: torch.device):
        self.name = name
        self.num_classes = num_classes
        self.device = torch.device(device)
        self._splits = {"train": train, "val": val, "test": test}
        self.in_chans, self.image_size = (int(d) for d in train.take(1).shape[1:3])
        self.train_size, self.val_size, self.test_size = len(train), len(val), len(test)
        self.pad = max(1, self.image_size // 8)  # random-crop padding: 4 px at 32 px, 3 px at 28 px
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add
        self._scale = (1 / (255 * std)).to(self.device)
        self._shift = (mean / std).to(self.device)

    def __repr__(self) -> str:
        return (f"Data({self.name!r}, {self.num_classes} classes, {self.in_chans}x{self.image_size}x{self.image_size}, "
                f"train {self.train_size}, val {self.val_size}, test {self.test_size}, device {self.device})")

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 images -> float32, normalised per channel."""
        return images.float() * self._scale - self._shift

    def check_batch_size(self, batch_size: int) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > self.train_size:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({self.train_size} images); "
                             f"use a smaller --batch-size or a larger --train-subset")

    def steps_per_epoch(self, batch_size: int) -> int:
        self.check_batch_size(batch_size)
        return self.train_size // batch_size

    def train_batches(self, batch_size: int, *, epoch: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled, augmented, normalised full batches; the same for the same ``(seed, epoch)``."""
        steps = self.steps_per_epoch(batch_size)  # checked here, not at the first next()
        used = steps * batch_size  # the last partial batch is dropped: BatchNorm wants full batches
        generator = epoch_generator(seed, epoch)
        # every draw of the epoch up front, in a fixed order, so none depends on how far it is consumed
        order = torch.randperm(self.train_size, generator=generator)[:used]
        shifts = torch.randint(-self.pad, self.pad + 1, (used, 2), generator=generator).to(self.device)
        flips = (torch.rand(used, generator=generator) < 0.5).to(self.device)
        return self._augmented(order, shifts, flips, batch_size)

    def _augmented(self, order, shifts, flips, batch_size) -> Iterator[tuple[Tensor, Tensor]]:
        for step, (images, labels) in enumerate(self._splits["train"].batches(order, batch_size)):
            batch = slice(step * batch_size, (step + 1) * batch_size)
            yield self.normalise(augment(images, shifts[batch], flips[batch], self.pad)), labels

    def eval_batches(self, split: str, batch_size: int = 500) -> Iterator[tuple[Tensor, Tensor]]:
        """All of ``split`` ("val" or "test") in order, normalised, not augmented; the last batch may be partial."""
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; choose 'val' or 'test'")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return ((self.normalise(images), labels) for images, labels in self._splits[split].batches(None, batch_size))

    def example_input(self) -> Tensor:
        """Two normalised validation images (N=2: BatchNorm in train mode needs more than one)."""
        images = self._splits["val"].take(2)
        if len(images) < 2:
            images = torch.cat([images, self._splits["train"].take(2 - len(images))])
        return self.normalise(images)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch's draws (CPU so that CPU and CUDA runs draw the same numbers)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)


def augment(images: Tensor, shifts: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Random crop with padding and horizontal flip of a whole batch (N, C, H, W) in one gather.

    ``shifts`` (N, 2): each sample's (row, col) offset of its crop window from the centre, in
    [-pad, pad]; ``flips`` (N,) bool: mirror that sample left-right. The padding is 0, which on the
    uint8 images this is given means black, as with torchvision's ``RandomCrop(padding=...)``.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(h, device=device) + pad + shifts[:, :1]  # (N, H): source row of each output row
    cols = torch.arange(w, device=device) + pad + shifts[:, 1:]  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # reading the window backwards mirrors it
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=device).view(1, c, 1, 1)
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


# ------------------------------------------------------------------------------------ loading
def load_data(config: TrainConfig, device: torch.device | str = "cpu") -> Data:
    """The dataset ``config.dataset``, split and placed on ``device``; errors say what to fix."""
    device = torch.device(device)
    if config.dataset == "imagefolder":
        data = _load_imagefolder(config, device)
    else:
        if config.dataset == "synthetic":
            train_images, train_labels, test_images, test_labels = _synthetic(config)
            # synthetic makes exactly the images asked for: the validation images on top of the training ones
            val_size = len(train_labels) - (config.train_subset or SYNTHETIC_TRAIN)
            num_classes, stats = 10, _measured_stats(train_images)
        else:
            loader = _read_fashion_mnist if config.dataset == "fashion-mnist" else _read_cifar10
            train_images, train_labels, test_images, test_labels = loader(config.data_dir)
            size = config.image_size or train_images.shape[-1]
            train_images, test_images = _resize(train_images, size), _resize(test_images, size)
            val_size, num_classes, stats = config.val_size, 10, STATS[config.dataset]
        train_idx, val_idx = carve_split(train_labels, val_size=val_size, train_subset=config.train_subset,
                                         dataset=config.dataset)
        train_images, train_labels = torch.from_numpy(train_images), torch.from_numpy(train_labels)
        train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        data = Data(name=config.dataset, num_classes=num_classes, mean=stats[0], std=stats[1], device=device,
                    train=_TensorSplit(train_images[train_idx], train_labels[train_idx], device),
                    val=_TensorSplit(train_images[val_idx], train_labels[val_idx], device),
                    test=_TensorSplit(torch.from_numpy(test_images), torch.from_numpy(test_labels), device))
    data.check_batch_size(config.batch_size)
    return data


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


def _resize(images: np.ndarray, size: int) -> np.ndarray:
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


# ------------------------------------------------------------------------------------ Fashion-MNIST
def _read_fashion_mnist(data_dir: str | None):
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


# ------------------------------------------------------------------------------------ CIFAR-10
def _read_cifar10(data_dir: str | None):
    root = pathlib.Path(data_dir or CIFAR10_DIR).expanduser().resolve()
    # the torchvision root holding the extracted folder, or that folder itself
    for directory in (root / "cifar-10-batches-py", root):
        if (directory / "data_batch_1").is_file():
            return _read_cifar_parts(directory, "", _read_cifar_python)
    for directory in (root / "cifar-10-batches-bin", root):
        if (directory / "data_batch_1.bin").is_file():
            return _read_cifar_parts(directory, ".bin", _read_cifar_binary)
    looked = [root / "cifar-10-batches-py" / "data_batch_1", root / "cifar-10-batches-bin" / "data_batch_1.bin",
              root / "data_batch_1", root / "data_batch_1.bin"]
    raise ValueError(f"CIFAR-10 not found: looked for {', '.join(map(str, looked))}. Nothing is downloaded here: "
                     f"get cifar-10-python.tar.gz (or cifar-10-binary.tar.gz) from "
                     f"https://www.cs.toronto.edu/~kriz/cifar.html, unpack it into a directory DIR (giving "
                     f"DIR/cifar-10-batches-py or DIR/cifar-10-batches-bin) and pass --data-dir DIR")


def _read_cifar_parts(directory: pathlib.Path, suffix: str, read):
    parts = [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]
    missing = [str(directory / p) for p in parts if not (directory / p).is_file()]
    if missing:
        raise ValueError(f"CIFAR-10 in {directory} is incomplete: missing {', '.join(missing)}")
    train = [read(directory / p) for p in parts[:5]]
    test_images, test_labels = read(directory / parts[5])
    return (np.concatenate([images for images, _ in train]), np.concatenate([labels for _, labels in train]),
            test_images, test_labels)


def _read_cifar_binary(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records (3073 bytes each)")
    records = raw.reshape(-1, 3073)  # a label byte, then 1024 red, 1024 green and 1024 blue pixel bytes
    return np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _read_cifar_python(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
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


def _numpy_core(module: str, name: str):
    # numpy 2 moved numpy.core to numpy._core (the old name still loads, with a warning): try the new one first
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {module}.{name}")


# what pickled numpy arrays refer to, whatever the numpy and protocol that wrote them; nothing else
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_core("numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_core("numeric", "_frombuffer"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,  # how Python 3 writes bytes in protocol 2
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses every other global.

    A pickle can name any importable callable and have it called while loading (``os.system`` and
    friends), so ``pickle.load`` on a file is running that file as code: this project never does.
    """

    def find_class(self, module: str, name: str):
        resolve = _ARRAY_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}: only numpy arrays and plain "
                                         f"containers are allowed in a CIFAR-10 batch file")
        return resolve()


# ------------------------------------------------------------------------------------ synthetic
def _synthetic(config: TrainConfig):
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


# ------------------------------------------------------------------------------------ image folder
def _load_imagefolder(config: TrainConfig, device: torch.device) -> Data:
    """Images decoded from disk: Resize + CenterCrop to ``image_size`` in the DataLoader workers; the
    random crop (padding image_size // 8) and flip happen on the device like the in-memory datasets', so
    that they are drawn from the (seed, epoch) generator too, however many workers there are."""
    if config.data_dir is None:
        raise ValueError(f"dataset 'imagefolder' needs --data-dir DIR laid out as {IMAGEFOLDER_LAYOUT}")
    root = pathlib.Path(config.data_dir).expanduser().resolve()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise ValueError(f"imagefolder: {train_dir} is not a directory; expected {IMAGEFOLDER_LAYOUT}")
    test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if test_dir is None:
        raise ValueError(f"imagefolder: found {train_dir} but neither {root / 'test'} nor {root / 'val'} to test on; "
                         f"expected {IMAGEFOLDER_LAYOUT}")

    from torchvision import datasets, transforms  # only this dataset needs torchvision and PIL

    size = config.image_size or IMAGEFOLDER_SIZE
    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    train_set = datasets.ImageFolder(str(train_dir), transform=transform)  # RGB: grey images are converted
    test_set = datasets.ImageFolder(str(test_dir), transform=transform)
    if test_set.classes != train_set.classes:
        raise ValueError(f"imagefolder: the classes in {test_dir} {test_set.classes} differ from those in "
                         f"{train_dir} {train_set.classes}; both need the same class folders")
    train_idx, val_idx = carve_split(np.asarray(train_set.targets), val_size=config.val_size,
                                     train_subset=config.train_subset, dataset=str(train_dir))
    subset = torch.utils.data.Subset
    train, val, test = (_FolderSplit(dataset, config.num_workers, device) for dataset in (
        subset(train_set, train_idx.tolist()), subset(train_set, val_idx.tolist()), test_set))
    return Data(name="imagefolder", num_classes=len(train_set.classes), mean=STATS["imagefolder"][0],
                std=STATS["imagefolder"][1], train=train, val=val, test=test, device=device)
