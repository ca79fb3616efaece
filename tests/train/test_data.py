"""Datasets: parsing, the fixed validation carve, deterministic augmented batches, and the error messages."""

from __future__ import annotations

import ast
import gzip
import io
import os
import pickle
import struct
import types
import warnings
from pathlib import Path

import chex_tune  # noqa: F401  (before torchvision: the import fix)

# isort: split

import numpy as np
import pytest
import torch

import chex_tune.config
import chex_tune.train.data
from chex_tune.config import TrainConfig
from chex_tune.train.data import (
    DATASETS,
    ArrayUnpickler,
    augment,
    balanced_counts,
    carve_split,
    default_val_size,
    load_data,
    read_idx,
)

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def write_idx(path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
    """A fake Fashion-MNIST: 200 training images (20 per class), 50 test images, 28x28."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (200, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(200) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (50, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(50) % 10,
    }
    for name, array in arrays.items():
        write_idx(tmp_path / f"{name}.gz", array)
    return tmp_path, arrays


def fashion(directory, **settings) -> TrainConfig:
    return TrainConfig(dataset="fashion-mnist", data_dir=str(directory), **{"batch_size": 16, **settings})


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


# ------------------------------------------------------------------------------------ the registry
def test_registry_names_are_the_configs_choices_in_order():
    assert tuple(chex_tune.train.data.DATASETS) == chex_tune.config.DATASETS


def imported_modules(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module:
        return {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return set()


def test_the_data_package_imports_the_config_only_for_type_checking():
    """So that chex_tune.config can import DATASETS from here without an import cycle."""
    package = Path(chex_tune.train.data.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        guarded = {id(node) for block in tree.body if isinstance(block, ast.If)
                   and ast.unparse(block.test) == "TYPE_CHECKING" for node in ast.walk(block)}
        for node in ast.walk(tree):
            if "chex_tune.config" in imported_modules(node):
                assert id(node) in guarded, f"{path.name}:{node.lineno} imports chex_tune.config at run time"


def test_load_data_dispatches_by_name_and_rejects_unknown_names(monkeypatch):
    loaded = load_data(TrainConfig(dataset="synthetic", train_subset=20, val_size=10, batch_size=4))
    calls = []
    monkeypatch.setitem(DATASETS, "synthetic", lambda config, device: calls.append((config, device)) or loaded)
    config = TrainConfig(dataset="synthetic", batch_size=4)
    assert load_data(config, "cpu") is loaded and calls == [(config, torch.device("cpu"))]
    with pytest.raises(ValueError, match=r"batch_size 21 is larger than the training set \(20 images\)"):
        load_data(TrainConfig(dataset="synthetic", batch_size=21))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; choose one of: fashion-mnist, cifar10, "
                                         "imagefolder, synthetic"):
        load_data(types.SimpleNamespace(dataset="mnist", batch_size=1))


# ------------------------------------------------------------------------------------ Fashion-MNIST
def test_read_idx_parses_header_and_returns_a_writable_copy(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    read = read_idx(tmp_path / "x.gz")
    assert read.shape == (2, 3, 4) and read.dtype == np.uint8
    np.testing.assert_array_equal(read, array)
    read[0, 0, 0] = 99  # np.frombuffer alone would be read-only
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc")
    with pytest.raises(ValueError, match=r"says \(5,\) \(5 bytes\) but 3 bytes follow"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_splits_shapes_and_normalisation(fashion_dir):
    directory, arrays = fashion_dir
    data = load_data(fashion(directory))
    assert (data.name, data.num_classes, data.in_chans, data.image_size) == ("fashion-mnist", 10, 1, 28)
    # default val: 10% of 200 clamped up to 500, but never more than half of the 200 images
    assert (data.train_size, data.val_size, data.test_size) == (100, 100, 50)
    images, labels = collect(data.eval_batches("test", batch_size=16))  # in order, last batch partial
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float()[:, None] / 255 - FASHION_MEAN) / FASHION_STD
    assert images.dtype == torch.float32 and images.shape == (50, 1, 28, 28)
    torch.testing.assert_close(images, expected)
    assert labels.dtype == torch.int64 and labels.tolist() == (np.arange(50) % 10).tolist()
    example = data.example_input()
    assert example.shape == (2, 1, 28, 28) and example.dtype == torch.float32


def test_fashion_mnist_resized_to_image_size(fashion_dir):
    data = load_data(fashion(fashion_dir[0], image_size=14))
    images, _ = next(data.train_batches(16, epoch=0, seed=0))
    assert data.image_size == 14 and images.shape == (16, 1, 14, 14)
    assert data.pad == 1  # 14 // 8


def test_missing_fashion_mnist_lists_paths_and_the_apt_package(tmp_path):
    with pytest.raises(ValueError) as error:
        load_data(fashion(tmp_path / "nowhere"))
    message = str(error.value)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert str(tmp_path / "nowhere" / f"{name}.gz") in message
    assert "sudo apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


# ------------------------------------------------------------------------------------ splits
def test_val_carve_is_class_balanced_disjoint_and_fixed():
    labels = np.arange(200) % 10
    train, val = carve_split(labels, val_size=35, train_subset=None)
    assert len(val) == 35 and len(train) == 165
    assert sorted(np.bincount(labels[val]).tolist()) == [3] * 5 + [4] * 5  # remainder spread one per class
    assert not set(train) & set(val) and set(train) | set(val) == set(range(200))
    again, val_again = carve_split(labels, val_size=35, train_subset=None)
    np.testing.assert_array_equal(val, val_again)
    np.testing.assert_array_equal(train, again)


def test_train_subset_is_exact_class_balanced_and_outside_val():
    labels = np.arange(200) % 10
    train, val = carve_split(labels, val_size=50, train_subset=23)
    assert len(train) == 23 and len(val) == 50
    assert sorted(np.bincount(labels[train], minlength=10).tolist()) == [2] * 7 + [3] * 3
    assert not set(train) & set(val)
    # a larger draw keeps the smaller one's images; the validation images do not move
    larger, val_larger = carve_split(labels, val_size=50, train_subset=60)
    assert set(train) <= set(larger)
    np.testing.assert_array_equal(val, val_larger)


def test_balanced_counts_fill_small_classes_first():
    assert balanced_counts([10, 10, 10], 4) == [2, 1, 1]
    assert balanced_counts([1, 10, 10], 9) == [1, 4, 4]  # the small class's shortfall goes to the others
    assert balanced_counts([5, 2, 5], 12) == [5, 2, 5]
    with pytest.raises(ValueError, match="cannot take 13 images from 12"):
        balanced_counts([5, 2, 5], 13)


def test_default_val_size():
    assert default_val_size(60000, None) == 5000  # 6000 clamped down
    assert default_val_size(60000, 1000) == 500  # 100 clamped up
    assert default_val_size(20000, None) == 2000
    assert default_val_size(200, None) == 100  # never more than half


def test_val_split_is_the_same_for_every_run_seed(fashion_dir):
    a = load_data(fashion(fashion_dir[0], seed=0, train_subset=30, val_size=20))
    b = load_data(fashion(fashion_dir[0], seed=7, train_subset=30, val_size=20))
    val_a, labels_a = collect(a.eval_batches("val"))
    val_b, labels_b = collect(b.eval_batches("val"))
    assert torch.equal(val_a, val_b) and torch.equal(labels_a, labels_b)
    assert torch.bincount(labels_a).tolist() == [2] * 10
    assert (a.train_size, a.val_size) == (30, 20)
    _, train_labels = next(a.train_batches(30, epoch=0, seed=0))  # one batch: the whole training set
    assert torch.bincount(train_labels).tolist() == [3] * 10


def test_train_and_val_images_are_disjoint(fashion_dir):
    data = load_data(fashion(fashion_dir[0], train_subset=40, val_size=30))
    stored = {split: {bytes(row) for row in data._splits[split].images.flatten(1).numpy()}  # un-augmented
              for split in ("train", "val")}
    assert len(stored["train"]) == 40 and len(stored["val"]) == 30  # the random fake images are all distinct
    assert not stored["train"] & stored["val"]


# ------------------------------------------------------------------------------------ training batches
def test_train_batches_shapes_dtypes_and_drop_last(fashion_dir):
    data = load_data(fashion(fashion_dir[0]))  # 100 training images
    batches = list(data.train_batches(16, epoch=0, seed=0))
    assert data.steps_per_epoch(16) == 6 == len(batches)  # 100 // 16: the partial 4 are dropped
    for images, labels in batches:
        assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32 and images.device.type == "cpu"
        assert labels.shape == (16,) and labels.dtype == torch.int64
    labels = torch.cat([labels for _, labels in batches])
    assert (torch.bincount(labels, minlength=10) <= 10).all()  # 10 per class: no image twice in an epoch
    # normalised: raw pixels 0..255 (and black padding) map into [-mean/std, (1-mean)/std]
    images = torch.cat([images for images, _ in batches])
    low, high = -FASHION_MEAN / FASHION_STD, (1 - FASHION_MEAN) / FASHION_STD
    assert images.min() >= low - 1e-5 and images.max() <= high + 1e-5


def test_train_batches_depend_only_on_seed_and_epoch(fashion_dir):
    one = load_data(fashion(fashion_dir[0]))
    other = load_data(fashion(fashion_dir[0], seed=3))  # a fresh object, as after a resume
    rng_before = torch.get_rng_state()
    first = list(one.train_batches(16, epoch=2, seed=5))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    for (x1, y1), (x2, y2) in zip(first, other.train_batches(16, epoch=2, seed=5)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    _, next_epoch = collect(one.train_batches(16, epoch=3, seed=5))
    _, other_seed = collect(one.train_batches(16, epoch=2, seed=6))
    _, labels = collect(first)
    assert not torch.equal(labels, next_epoch) and not torch.equal(labels, other_seed)


def test_train_batches_are_augmented(fashion_dir):
    data = load_data(fashion(fashion_dir[0], val_size=100))
    images, labels = next(data.train_batches(100, epoch=0, seed=0))  # every training image once
    plain, plain_labels = collect(data._splits["train"].batches(None, 100))
    plain = data.normalise(plain)
    # match each augmented image to its source by label and count how many are unchanged
    unchanged = sum(any(torch.equal(image, p) for p in plain[plain_labels == label]) for image, label in
                    zip(images, labels))
    assert unchanged < 20  # crop offsets in [-3, 3]^2 and a flip: 1 in 98 is left as it was


def test_augment_offsets_and_flips():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5)
    no_flip, flip = torch.zeros(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool)
    centred = torch.zeros(2, 2, dtype=torch.int64)
    assert torch.equal(augment(x, centred, no_flip, 2), x)
    assert torch.equal(augment(x, centred, flip, 2), x.flip(-1))
    down = augment(x, torch.tensor([[1, 0], [1, 0]]), no_flip, 2)  # the window moves one row down
    assert torch.equal(down[:, :, :-1], x[:, :, 1:]) and (down[:, :, -1] == 0).all()  # zero padding
    corner = augment(x, torch.tensor([[-2, -2], [-2, -2]]), no_flip, 2)
    assert torch.equal(corner[:, :, 2:, 2:], x[:, :, :3, :3]) and (corner[:, :, :2] == 0).all()
    # each sample gets its own offset and flip in the same call
    mixed = augment(x, torch.tensor([[0, 0], [0, 1]]), torch.tensor([True, False]), 2)
    assert torch.equal(mixed[0], x[0].flip(-1))
    assert torch.equal(mixed[1, :, :, :-1], x[1, :, :, 1:]) and (mixed[1, :, :, -1] == 0).all()


# ------------------------------------------------------------------------------------ errors
def test_batch_size_larger_than_the_training_set(fashion_dir):
    with pytest.raises(ValueError, match=r"batch_size 512 is larger than the training set \(100 images\); "
                                         r"use a smaller --batch-size or a larger --train-subset"):
        load_data(fashion(fashion_dir[0], batch_size=512))
    data = load_data(fashion(fashion_dir[0]))
    for call in (lambda: data.steps_per_epoch(101), lambda: data.train_batches(101, epoch=0, seed=0),
                 lambda: data.check_batch_size(101)):
        with pytest.raises(ValueError, match="batch_size 101 is larger than the training set"):
            call()
    with pytest.raises(ValueError, match="unknown split 'train'"):
        data.eval_batches("train")


def test_train_subset_or_val_size_too_large(fashion_dir):
    with pytest.raises(ValueError, match=r"train_subset 150 is larger than the 100 training images available "
                                         r"\(fashion-mnist has 200, 100 of them carved off"):
        load_data(fashion(fashion_dir[0], train_subset=150))
    with pytest.raises(ValueError, match="val_size 200 leaves no training images: fashion-mnist has 200"):
        load_data(fashion(fashion_dir[0], val_size=200))


# ------------------------------------------------------------------------------------ CIFAR-10
def fake_cifar(n: int, offset: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(i + offset) % 10 for i in range(n)]


PARTS = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Python2Pickler(pickle._Pickler):
    """Writes what the real CIFAR-10 files hold: Python 2 strings (BINSTRING) and numpy 1's module names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj if len(obj) < 256
                   else pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core.", "numpy.core.")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def dumps(value, protocol) -> bytes:
    if protocol != "python2":
        return pickle.dumps(value, protocol=protocol)
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(value)
    assert b"numpy.core.multiarray\n_reconstruct" in buffer.getvalue()
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", [2, 4, 5, "python2"])
def test_cifar10_python_format(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for k, part in enumerate(PARTS):
        images, labels = fake_cifar(10, k)
        (folder / part).write_bytes(dumps({b"data": images, b"labels": labels}, protocol))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 1's module names resolve without numpy 2's deprecation warning
        data = load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=10, batch_size=8))
    assert (data.num_classes, data.in_chans, data.image_size) == (10, 3, 32)
    assert (data.train_size, data.val_size, data.test_size) == (40, 10, 10)
    images, labels = collect(data.eval_batches("test"))
    raw, raw_labels = fake_cifar(10, 5)
    expected = (torch.from_numpy(raw).view(10, 3, 32, 32).float() / 255 - CIFAR_MEAN) / CIFAR_STD
    torch.testing.assert_close(images, expected)
    assert labels.tolist() == raw_labels


def test_cifar10_binary_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for k, part in enumerate(PARTS):
        images, labels = fake_cifar(10, k)
        records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], images], axis=1)
        (folder / f"{part}.bin").write_bytes(records.tobytes())
    data = load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=10, batch_size=8,
                                 image_size=16))
    assert (data.train_size, data.val_size, data.test_size, data.image_size) == (40, 10, 10, 16)
    _, labels = collect(data.eval_batches("test"))
    assert labels.tolist() == fake_cifar(10, 5)[1]
    images, _ = next(data.train_batches(8, epoch=0, seed=0))
    assert images.shape == (8, 3, 16, 16)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3074)
    with pytest.raises(ValueError, match="3074 bytes is not a whole number of CIFAR-10 records"):
        load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=10, batch_size=8))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_other_globals_is_refused(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    payload = pickle.dumps({b"data": _Exploit(marker), b"labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load the global (posix|os|nt)\.system"):
        ArrayUnpickler(io.BytesIO(payload), encoding="bytes").load()
    for part in PARTS:
        (folder / part).write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="refused to load the global"):
        load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert not marker.exists()


def test_missing_cifar10_lists_paths_and_downloads_nothing(tmp_path):
    with pytest.raises(ValueError) as error:
        load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert str(tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin") in message
    assert "Nothing is downloaded" in message and "--data-dir" in message
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ synthetic
def test_synthetic_shapes_sizes_and_fixed_images():
    a = load_data(TrainConfig(dataset="synthetic", seed=0))
    b = load_data(TrainConfig(dataset="synthetic", seed=9))
    assert (a.num_classes, a.in_chans, a.image_size) == (10, 3, 16)
    assert (a.train_size, a.val_size, a.test_size) == (1024, 500, 256)
    for split in ("val", "test"):
        xa, ya = collect(a.eval_batches(split))
        xb, yb = collect(b.eval_batches(split))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    small = load_data(TrainConfig(dataset="synthetic", image_size=8, train_subset=100, val_size=30, batch_size=10))
    assert (small.image_size, small.train_size, small.val_size, small.test_size) == (8, 100, 30, 256)
    images, labels = next(small.train_batches(10, epoch=0, seed=0))
    assert images.shape == (10, 3, 8, 8) and labels.dtype == torch.int64


def test_synthetic_is_learnable():
    data = load_data(TrainConfig(dataset="synthetic"))
    images, labels = collect(data.train_batches(128, epoch=0, seed=0))
    centroids = torch.stack([images[labels == c].mean(0).flatten() for c in range(10)])
    test, test_labels = collect(data.eval_batches("test"))
    accuracy = (torch.cdist(test.flatten(1), centroids).argmin(1) == test_labels).float().mean()
    assert accuracy > 0.8  # nearest class mean on augmented images; chance is 0.1


# ------------------------------------------------------------------------------------ image folder
@pytest.fixture
def image_dir(tmp_path):
    """2 classes x 6 training images and 2 x 2 test images, 8x8 PNGs: "a" red, "b" blue."""
    from PIL import Image

    colours = {"a": (255, 0, 0), "b": (0, 0, 255)}
    for split, count in (("train", 6), ("test", 2)):
        for name, colour in colours.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), colour).save(tmp_path / split / name / f"{i}.png")
    return tmp_path


def test_imagefolder_loads_splits_and_batches(image_dir):
    config = TrainConfig(dataset="imagefolder", data_dir=str(image_dir), image_size=8, val_size=4, batch_size=4,
                         num_workers=0)
    data = load_data(config)
    assert (data.num_classes, data.in_chans, data.image_size) == (2, 3, 8)
    assert (data.train_size, data.val_size, data.test_size) == (8, 4, 4)
    test, labels = collect(data.eval_batches("test", batch_size=3))
    assert test.shape == (4, 3, 8, 8) and labels.tolist() == [0, 0, 1, 1]
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(test[0], red.view(3, 1, 1).expand(3, 8, 8))
    _, val_labels = collect(data.eval_batches("val"))
    assert sorted(val_labels.tolist()) == [0, 0, 1, 1]
    rng_before = torch.get_rng_state()
    batches = list(data.train_batches(4, epoch=1, seed=0))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert len(batches) == data.steps_per_epoch(4) == 2 and batches[0][0].shape == (4, 3, 8, 8)
    for (x1, y1), (x2, y2) in zip(batches, load_data(config).train_batches(4, epoch=1, seed=0)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert data.example_input().shape == (2, 3, 8, 8)


def test_imagefolder_layout_errors(tmp_path, image_dir):
    with pytest.raises(ValueError, match=r"dataset 'imagefolder' needs --data-dir DIR laid out as DIR/train/"):
        load_data(TrainConfig(dataset="imagefolder"))
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing' / 'train'} is not a directory"):
        load_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path / "missing")))
    (image_dir / "test").rename(image_dir / "elsewhere")
    with pytest.raises(ValueError, match=f"neither {image_dir / 'test'} nor {image_dir / 'val'}"):
        load_data(TrainConfig(dataset="imagefolder", data_dir=str(image_dir)))
