"""The data object the training loop uses: one dataset's train/val/test splits on a device."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor

from chex_tune.train.data.augmentation import augment, epoch_generator

# per-channel mean and std of the pixels scaled to [0, 1]
STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}


class Data:
    """One dataset's train/val/test splits on a device, with deterministic augmented training batches.

    ``train``, ``val`` and ``test`` are splits of :mod:`chex_tune.train.data.storage` (uint8 images);
    each batch is augmented (training only) and normalised with ``mean`` and ``std`` on the device.
    """

    def __init__(self, *, name: str, num_classes: int, mean, std, train, val, test, device: torch.device):
        self.name = name
        self.num_classes = num_classes
        self.device = torch.device(device)
        self._splits = {"train": train, "val": val, "test": test}
        self.in_chans, self.image_size = (int(d) for d in train.take(1).shape[1:3])
        self.own_chans = self.in_chans  # the images' channels; in_chans: what the batches have (feed_channels)
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

    def lineage(self) -> dict:
        """What a run trained and was selected on, for its record: the dataset's name, a digest of its three splits'
        contents (the same images, labels and split give the same digest) and their sizes."""
        digest = hashlib.sha256("".join(self._splits[s].fingerprint() for s in ("train", "val", "test")).encode())
        return {"name": self.name, "digest": digest.hexdigest()[:16], "train_size": self.train_size,
                "val_size": self.val_size, "test_size": self.test_size}

    def feed_channels(self, in_chans: int | None) -> None:
        """Batches with ``in_chans`` channels (None: the images' own): a grey image's channel repeated (the same
        image on every channel, as a model trained on colour images of grey content saw it), or a colour image's
        normalised channels averaged into one. Other counts do not map one to one and are refused."""
        if in_chans is None or in_chans == self.own_chans:
            self.in_chans = self.own_chans
            return
        if self.own_chans != 1 and in_chans != 1:
            raise ValueError(f"in_chans {in_chans} does not fit dataset {self.name}'s {self.own_chans}-channel images: "
                             f"give {self.own_chans} (its own) or 1 (its channels averaged)")
        self.in_chans = in_chans

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 images -> float32, normalised per channel, with ``in_chans`` channels (``feed_channels``)."""
        if self.in_chans == self.own_chans:
            return images.float() * self._scale - self._shift
        if self.own_chans == 1:  # the repeat is a view: the float conversion is the only copy, as without it
            return images.expand(-1, self.in_chans, -1, -1).float() * self._scale - self._shift
        return (images.float() * self._scale - self._shift).mean(1, keepdim=True)

    def check_batch_size(self, batch_size: int) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > self.train_size:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({self.train_size} images); "
                             f"use a smaller --batch-size or a larger --train-subset")

    def steps_per_epoch(self, batch_size: int) -> int:
        self.check_batch_size(batch_size)
        return self.train_size // batch_size

    def train_batches(self, batch_size: int, *, epoch: int, seed: int,
                      shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled, augmented, normalised full batches; the same for the same ``(seed, epoch)``.

        ``shard=(rank, world_size)``: this rank's contiguous slice of every global batch of ``batch_size`` (which
        must split evenly), so ``world_size`` data-parallel ranks together see exactly one process's batches."""
        rank, world_size = shard
        steps = self.steps_per_epoch(batch_size)  # checked here, not at the first next()
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split evenly across {world_size} workers")
        used = steps * batch_size  # the last partial batch is dropped: BatchNorm wants full batches
        generator = epoch_generator(seed, epoch)
        # every draw of the epoch up front, in a fixed order, so none depends on how far it is consumed
        order = torch.randperm(self.train_size, generator=generator)[:used]
        shifts = torch.randint(-self.pad, self.pad + 1, (used, 2), generator=generator).to(self.device)
        flips = (torch.rand(used, generator=generator) < 0.5).to(self.device)
        if world_size > 1:  # keep this rank's columns of the (steps x batch) layout of the epoch's draws
            local = batch_size // world_size
            mine = torch.arange(used).view(steps, batch_size)[:, rank * local:(rank + 1) * local].flatten()
            on_device = mine.to(self.device)
            order, shifts, flips, batch_size = order[mine], shifts[on_device], flips[on_device], local
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
