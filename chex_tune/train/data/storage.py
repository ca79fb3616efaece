"""Where a split's images live: on the device as one uint8 tensor, or on disk, decoded by DataLoader workers.

Both kinds answer the same four calls, which is all :class:`~chex_tune.train.data.Data` asks of a split:
``len``, ``batches(order, batch_size)`` (uint8 images and int64 labels on the device, in ``order`` or in
stored order when it is None), ``take(n)`` (the first ``n`` images) and ``fingerprint()`` (a digest of what
the split holds, for a run's lineage).
"""

from __future__ import annotations

import hashlib
import os
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

    def fingerprint(self) -> str:
        """sha256 of the images' and labels' bytes."""
        digest = hashlib.sha256()
        for tensor in (self.images, self.labels):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


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

    def fingerprint(self) -> str:
        """sha256 of the file list: each image's class folder, name, size and label (reading every file would cost
        as much as an epoch)."""
        dataset, indices = self.dataset, None
        if isinstance(dataset, torch.utils.data.Subset):
            dataset, indices = dataset.dataset, dataset.indices
        samples = dataset.samples if indices is None else [dataset.samples[i] for i in indices]
        digest = hashlib.sha256()
        for path, label in samples:
            name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
            digest.update(f"{name}:{os.path.getsize(path)}:{label}\n".encode())
        return digest.hexdigest()
