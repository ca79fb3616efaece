"""Shared fixtures: tiny models that build in milliseconds on a CPU."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import chex_tune  # noqa: F401  (before timm: the torchvision import fix)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


class TinyResNet(nn.Module):
    """A stem, two residual blocks sharing one stream, a classifier: every coupling CHEX meets."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
                nn.Conv2d(2 * width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.head(x.mean((2, 3)))


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    return TinyResNet()


@pytest.fixture
def image_batch():
    torch.manual_seed(1)
    return torch.randn(4, 3, 16, 16)
