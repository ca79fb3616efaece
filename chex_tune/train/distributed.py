"""Data-parallel training: what one rank of a run does that a single process does not.

The loop trains under torch.distributed whenever a process group is up (Ray Train's ``TorchTrainer``
starts one per multi-worker trial; ``torchrun`` does too). Each rank trains on its slice of every
global batch and DDP averages the gradients, so N ranks take the steps one process would take on
the whole batch. CHEX's masks are decided once and broadcast from rank 0 (core); this file checks
that every rank holds them after each prune-regrow step, counts accuracy across ranks and says who
writes files (rank 0).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


class RanksDisagreeError(RuntimeError):
    """Data-parallel ranks hold different CHEX masks or models (they would train different networks)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's data-parallel ranks (rank 0 of 1 without a process group)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        """The rank that writes files, measures latency and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` as the ranks train it: in DDP (which first gives every rank rank 0's weights) when distributed."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """``values`` summed over the ranks (as they are, on one rank)."""
        if not self.distributed:
            return [float(v) for v in values]
        total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device(device))
        dist.all_reduce(total)
        return total.tolist()

    def gather(self, value: int, device: torch.device) -> list[int]:
        """Every rank's ``value`` (an integer), in rank order."""
        if not self.distributed:
            return [int(value)]
        mine = torch.tensor([int(value)], dtype=torch.int64, device=self._device(device))
        everyone = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        return [int(t) for t in everyone]

    def check_masks(self, masks: Sequence[torch.Tensor], device: torch.device, *, when: str) -> list[int]:
        """Every rank's digest of its masks; raises ``RanksDisagreeError`` naming ``when`` if they differ."""
        digests = self.gather(masks_digest(masks), device)
        if len(set(digests)) > 1:
            raise RanksDisagreeError(f"ranks hold different CHEX masks {when} (digests by rank: {digests})")
        return digests

    def output_gap(self, model: nn.Module, probe: torch.Tensor) -> float:
        """Largest |difference| between rank 0's eval outputs on ``probe`` and any rank's (0.0 on one rank)."""
        if not self.distributed:
            return 0.0
        with torch.no_grad():
            mine = model(probe).float()
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        gap = (mine - reference).abs().max().reshape(1).to(torch.float64)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        return float(gap)

    def summary(self, model: nn.Module, probe: torch.Tensor, *, sync_bn: bool) -> dict:
        """How the ranks trained, for a run's result (empty on one process): world, backend, whether BatchNorm was
        synchronised and the largest gap between the ranks' eval outputs of ``model`` (collective)."""
        if not self.distributed:
            return {}
        return {"world_size": self.world_size, "backend": dist.get_backend(), "sync_bn": sync_bn,
                "output_gap": self.output_gap(model, probe)}

    @staticmethod
    def _device(device: torch.device) -> torch.device:
        return device if dist.get_backend() == "nccl" else torch.device("cpu")


def masks_digest(masks: Sequence[torch.Tensor]) -> int:
    """A CRC of the masks' bits (equal masks, equal digest), small enough to all-gather every step."""
    if not masks:
        return 0
    flat = torch.cat([m.flatten().to(torch.uint8).cpu() for m in masks])
    return zlib.crc32(flat.numpy().tobytes())
