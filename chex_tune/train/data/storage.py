"""Where a split's images live: on the device as one uint8 tensor, or on disk, decoded by DataLoader workers.

Both kinds answer the same three calls, which is all :class:`~chex_tune.train.data.Data` asks of a split:
``len``, ``batches(order, batch_size)`` (uint8 images and int64 labels on the device, in ``order`` or in
stored order when it is None) and ``take(n)`` (the first ``n`` images).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class TensorSplit:
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


class FolderSplit:
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
