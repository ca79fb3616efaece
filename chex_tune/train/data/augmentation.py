"""Device-side augmentation: random crop with padding and horizontal flip, vectorised over a batch.

Every draw comes from a CPU ``torch.Generator`` seeded from ``(seed, epoch)`` alone, so a run resumed at
epoch e sees exactly the batches an uninterrupted run sees, on CPU and CUDA alike, and the global RNG is
never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
