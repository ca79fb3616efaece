"""Top-1 accuracy of a model on a split, counted across data-parallel ranks when there are several."""

from __future__ import annotations

import torch
from torch import nn

from chex_tune.train.data import Data
from chex_tune.train.distributed import Ranks

ONE_PROCESS = Ranks()


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, split: str, *, amp: bool = False, channels_last: bool = False,
             ranks: Ranks = ONE_PROCESS) -> float:
    """Top-1 accuracy on ``split`` ("val" or "test"); data-parallel ranks each count every world_size-th batch."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for index, (images, labels) in enumerate(data.eval_batches(split)):
        if index % ranks.world_size != ranks.rank:
            continue
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            correct = correct + (model(images).argmax(1) == labels).sum()
        total += len(labels)
    model.train(was_training)
    correct, total = ranks.sum([float(correct), total], data.device)
    return correct / total
