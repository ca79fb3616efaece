"""A folder of images, one subfolder per class, decoded from disk by DataLoader workers."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from chex_tune.train.data.dataset import STATS, Data
from chex_tune.train.data.splits import carve_split
from chex_tune.train.data.storage import FolderSplit

if TYPE_CHECKING:
    from chex_tune.config import TrainConfig

IMAGEFOLDER_SIZE = 224
IMAGEFOLDER_LAYOUT = ("DIR/train/<class>/<image> for training (the validation split is carved from it) and "
                      "DIR/test/<class>/<image> (or DIR/val/<class>/<image>) for the test set")


def load_imagefolder(config: TrainConfig, device: torch.device) -> Data:
    """Images decoded from disk: Resize + CenterCrop to ``image_size`` in the DataLoader workers; the
    random crop (padding image_size // 8) and flip happen on the device like the in-memory datasets', so
    that they are drawn from the (seed, epoch) generator too, however many workers there are."""
    train_dir, test_dir = _folders(config.data_dir)

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
    train, val, test = (FolderSplit(dataset, config.num_workers, device) for dataset in (
        subset(train_set, train_idx.tolist()), subset(train_set, val_idx.tolist()), test_set))
    return Data(name="imagefolder", num_classes=len(train_set.classes), mean=STATS["imagefolder"][0],
                std=STATS["imagefolder"][1], train=train, val=val, test=test, device=device)


def _folders(data_dir: str | None) -> tuple[pathlib.Path, pathlib.Path]:
    """The training and test folders under ``data_dir``; errors name what is missing and the layout."""
    if data_dir is None:
        raise ValueError(f"dataset 'imagefolder' needs --data-dir DIR laid out as {IMAGEFOLDER_LAYOUT}")
    root = pathlib.Path(data_dir).expanduser().resolve()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise ValueError(f"imagefolder: {train_dir} is not a directory; expected {IMAGEFOLDER_LAYOUT}")
    test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if test_dir is None:
        raise ValueError(f"imagefolder: found {train_dir} but neither {root / 'test'} nor {root / 'val'} to test on; "
                         f"expected {IMAGEFOLDER_LAYOUT}")
    return train_dir, test_dir
