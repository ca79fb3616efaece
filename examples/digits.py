"""The user's own code the examples share: a small CNN that timm does not have, a dataset built here, a loss.

Nothing in this file knows about chex-tune. The dataset is scikit-learn's bundled 8x8 digits (1,797
images, shipped with the package: nothing is downloaded), split once into training and validation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BATCH_SIZE = 64


class DigitsNet(nn.Module):
    """A stem, one residual block, a strided stage and a classifier."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.down(x).mean((2, 3)))


def build_model(width: int = 16, classes: int = 10) -> DigitsNet:
    """How the dense model is built: chex-tune records this function's name to rebuild compact models."""
    return DigitsNet(width=width, classes=classes)


def load_digits_split(val_fraction: float = 0.2, seed: int = 0):
    """(train_x, train_y), (val_x, val_y) as tensors: images (N, 1, 8, 8) scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def batches(x: torch.Tensor, y: torch.Tensor, *, epoch: int, seed: int = 0):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    for start in range(0, len(y), BATCH_SIZE):
        index = order[start:start + BATCH_SIZE]
        yield x[index], y[index]


def steps_per_epoch(n: int) -> int:
    return -(-n // BATCH_SIZE)


def digits_loss(logits: torch.Tensor, labels: torch.Tensor, confidence_penalty: float = 0.05) -> torch.Tensor:
    """Cross-entropy minus a small entropy bonus (a confidence penalty): the user's own loss."""
    log_probs = F.log_softmax(logits, dim=1)
    entropy = -(log_probs.exp() * log_probs).sum(1).mean()
    return F.nll_loss(log_probs, labels) - confidence_penalty * entropy


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Validation accuracy and loss."""
    was_training = model.training
    model.eval()
    logits = model(x)
    model.train(was_training)
    return {"val_acc": float((logits.argmax(1) == y).float().mean()), "val_loss": float(F.cross_entropy(logits, y))}


def validation_accuracy(model: nn.Module) -> float:
    """For ``chex-tune export --evaluate digits:validation_accuracy``: the exported file on the same split."""
    _, (x, y) = load_digits_split()
    return evaluate(model, x, y)["val_acc"]


def train_and_save(path, *, epochs: int, width: int = 16) -> None:
    """The model a user already has: a dense DigitsNet trained in their own loop and saved as a state_dict."""
    torch.manual_seed(0)
    (train_x, train_y), _ = load_digits_split()
    model = build_model(width=width)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(epochs):
        for x, y in batches(train_x, train_y, epoch=epoch):
            optimizer.zero_grad()
            digits_loss(model(x), y).backward()
            optimizer.step()
    torch.save(model.state_dict(), path)
