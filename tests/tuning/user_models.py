"""A user's own model code for the tests: not a timm model, importable as ``user_models`` (never a test file).

The tests' processes import it from this directory (pytest puts it on the path; fresh processes and Ray
workers get it through PYTHONPATH), the way a user's package is importable.
"""

from __future__ import annotations

import time

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
                                   nn.ReLU(), nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width))
        self.head = nn.Linear(width, classes)
        self.delay_s = 0.0  # > 0: every forward pass sleeps this long (a model whose graph build runs away)

    def forward(self, x):
        if self.delay_s:
            time.sleep(self.delay_s)
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)).mean((2, 3)))


def build(width: int = 8, classes: int = 4) -> TinyNet:
    return TinyNet(width=width, classes=classes)


def data(n: int = 64, seed: int = 0):
    """Four classes told apart by where a bright square sits: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=generator)
    x = torch.randn(n, 1, 8, 8, generator=generator) * 0.3
    for i, label in enumerate(y.tolist()):
        row, col = divmod(label, 2)
        x[i, 0, row * 4:row * 4 + 4, col * 4:col * 4 + 4] += 1.0
    return x, y


def train(model, optimizer, reporter, x, y, *, epochs: int, steps: int, report: bool = True) -> None:
    """The user's loop: full-batch steps, the reporter stepped after each, val_loss/val_acc each epoch."""
    for _ in range(epochs):
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reporter.step()
        if report:
            with torch.no_grad():
                model.eval()
                logits = model(x)
                model.train()
            reporter.report(val_loss=float(nn.functional.cross_entropy(logits, y)),
                            val_acc=float((logits.argmax(1) == y).float().mean()))


def ddp_trainable(config: dict) -> None:
    """A user's own data-parallel loop, as each rank of a multi-worker trial runs it: the same model and reporter on
    every rank, the model wrapped in DDP, each rank on its half of the data, every reporter call on every rank."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from chex_tune.tuning import ChexReporter

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = data()
    model = build(width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    chex = ChexReporter(model, x[:2], config, total=6, optimizer=optimizer, builder="user_models:build",
                        builder_kwargs={"width": 8})
    train(DistributedDataParallel(model), optimizer, chex, x[rank::world], y[rank::world], epochs=2, steps=3)
    chex.finish(rank=float(rank))


def lightning_ddp_trainable(config: dict) -> None:
    """A user's Lightning fit on every rank of a multi-worker trial: Ray Train's DDP strategy and environment, the
    CHEX callback as in a one-process fit."""
    import chex_tune  # noqa: F401  (first: makes `import torchvision`, so lightning, work on CPU-only torch)

    # isort: split
    import lightning.pytorch as pl
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer
    from torch.utils.data import DataLoader, TensorDataset

    from chex_tune.tuning import ChexLightningCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build(width=8)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            accuracy = (self.net(batch[0]).argmax(1) == batch[1]).float().mean()
            self.log("val_acc", accuracy, sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=config["lr"], momentum=0.9)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = data()
    chex = ChexLightningCallback(x[:2], config, builder="user_models:build", builder_kwargs={"width": 8},
                                 attribute="net")
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices="auto", strategy=RayDDPStrategy(),
                         plugins=[RayLightningEnvironment()], callbacks=[chex], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = prepare_trainer(trainer)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    trainer.fit(Module(), loader, DataLoader(TensorDataset(x, y), batch_size=32))
