"""The optimisation recipe of the built-in loop: SGD with Nesterov momentum, no weight decay on norms and biases,
linear warm-up then cosine decay (set from the step count alone, so a resumed run needs no scheduler state)."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, *, total: int, base_lr: float, warmup_fraction: float) -> float:
    """Linear warm-up over the first ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warmup = round(warmup_fraction * total)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; norm scales/shifts and biases (1-d parameters) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
