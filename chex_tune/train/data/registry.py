"""The datasets by name, and :func:`load_data`, which looks ``config.dataset`` up among them.

A dataset is a plain function ``(config, device) -> Data`` that reads its images, carves the splits
and places them on ``device``; its name is what ``TrainConfig.dataset`` (and ``--dataset``) accept.
This module imports nothing from :mod:`chex_tune.config` at run time, so the config can import
``DATASETS`` to validate its field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from chex_tune.train.data.cifar10 import load_cifar10
from chex_tune.train.data.dataset import Data
from chex_tune.train.data.fashion_mnist import load_fashion_mnist
from chex_tune.train.data.imagefolder import load_imagefolder
from chex_tune.train.data.synthetic import load_synthetic

if TYPE_CHECKING:
    from chex_tune.config import TrainConfig

DATASETS: dict[str, Callable[[TrainConfig, torch.device], Data]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
    "synthetic": load_synthetic,
}


def load_data(config: TrainConfig, device: torch.device | str = "cpu") -> Data:
    """The dataset ``config.dataset``, split and placed on ``device``; errors say what to fix."""
    try:
        load = DATASETS[config.dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of: {', '.join(DATASETS)}") from None
    data = load(config, torch.device(device))
    data.check_batch_size(config.batch_size)
    data.feed_channels(config.in_chans)
    return data
