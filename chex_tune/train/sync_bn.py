"""BatchNorm over the global batch of data-parallel workers, on any backend.

torch's ``SyncBatchNorm`` runs on GPUs only; this one all-reduces the per-channel sums (and their
gradients on the way back) with plain collectives, so gloo on CPU works too. It is
swapped in by changing the class of the model's own ``BatchNorm2d`` modules rather than replacing
them: the ``ChannelExplorer`` holds those modules (masks, snapshots, hooks), and the class adds no
state, so swapping back gives the plain module bit for bit.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of every rank's batch together."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        values = x.float()
        count = values.new_full((1,), values.numel() // channels)
        sums = _SumAcrossRanks.apply(torch.cat([values.sum((0, 2, 3)), (values * values).sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:channels] / n
        var = (sums[channels:2 * channels] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return (values * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


class _SumAcrossRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss reaches every rank's input."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


def synchronise(model: nn.Module) -> int:
    """Make every plain ``BatchNorm2d`` of ``model`` a ``SyncedBatchNorm2d`` in place; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncedBatchNorm2d
            swapped += 1
    return swapped


def desynchronise(model: nn.Module) -> None:
    """Undo ``synchronise``: plain ``BatchNorm2d`` modules again."""
    for module in model.modules():
        if type(module) is SyncedBatchNorm2d:
            module.__class__ = nn.BatchNorm2d


def plain_norms(model: nn.Module) -> list[nn.Module]:
    """The model's plain ``BatchNorm2d`` modules: what ``synchronised`` swaps (found once per model, not per step:
    walking a resnet50's modules twice costs ~0.4 ms)."""
    return [module for module in model.modules() if type(module) is nn.BatchNorm2d]


@contextlib.contextmanager
def synchronised(norms: list[nn.Module]):
    """``norms`` (``plain_norms`` of a model) synchronised inside the block: a data-parallel run's training step.
    Everything else (tracing, pruning, compaction, evaluation, the saved model) sees the plain classes it knows; the
    swap changes classes only."""
    for module in norms:
        module.__class__ = SyncedBatchNorm2d
    try:
        yield
    finally:
        for module in norms:
            module.__class__ = nn.BatchNorm2d


def warn_unsynchronised(model: nn.Module) -> list[str]:
    """Name the norm layers ``synchronise`` leaves alone: subclasses with their own forward (timm's BatchNormAct2d,
    say) keep per-worker statistics."""
    left = [name for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) not in (nn.BatchNorm2d,
                                                                                         SyncedBatchNorm2d)]
    if left:
        logger.warning("sync_bn: %d norm layer(s) of other classes keep per-worker statistics: %s", len(left),
                       ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
    return left
