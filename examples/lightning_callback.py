#!/usr/bin/env python
"""CHEX in a PyTorch Lightning model with one line: ``Trainer(callbacks=[ChexLightningCallback(...)])``.

    python examples/lightning_callback.py --trials 2

A small LightningModule (the user's DigitsNet inside, the user's loss, ``val_acc`` logged with
``self.log``) trains with the callback; a two-trial Optuna study around it logs each fit to MLflow
through ``OptunaMlflowCallback``. Needs ``pip install 'chex-tune[lightning]'``. MLflow goes to
MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db; Lightning writes nothing (no logger, no checkpoints).
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import chex_tune  # noqa: F401  (first: on CPU-only torch with a CUDA torchvision build, this makes lightning import)

# isort: split
import lightning.pytorch as pl
import optuna
import torch
from digits import build_model, digits_loss, evaluate, load_digits_split
from torch.utils.data import DataLoader, TensorDataset

from chex_tune.tuning import ChexLightningCallback, ChexSpace, OptunaMlflowCallback

OBJECTIVES = "val_acc:max,macs:min"
CHEX = ChexSpace(sparsity=(0.3, 0.8), period=(2, 12))


class DigitsModule(pl.LightningModule):
    def __init__(self, lr: float, width: int = 16):
        super().__init__()
        self.lr = lr
        self.net = build_model(width=width)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = digits_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        metrics = evaluate(self.net, x, y)
        self.log_dict(metrics)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def make_objective(epochs: int, workdir: str):
    (train_x, train_y), (val_x, val_y) = load_digits_split()
    train = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=len(val_y))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        lr = trial.suggest_float("lr", 3e-3, 3e-2, log=True)
        torch.manual_seed(0)
        module = DigitsModule(lr)
        chex = ChexLightningCallback(train_x[:2], CHEX.suggest(trial), attribute="net", trial=trial,
                                     builder=build_model, builder_kwargs={"width": 16})
        trainer = pl.Trainer(max_epochs=epochs, callbacks=[chex], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=workdir,
                             accelerator="cpu", num_sanity_val_steps=0)
        trainer.fit(module, train, val)
        return chex.result.values(OBJECTIVES)

    return objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--experiment", default="lightning_callback")
    args = parser.parse_args(argv)

    for name in ("lightning.pytorch", "pytorch_lightning"):  # no tips and device banners per fit
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=0))
    with tempfile.TemporaryDirectory(prefix="chex-example-") as workdir, \
            OptunaMlflowCallback(args.experiment, objectives=OBJECTIVES) as record:
        study.optimize(make_objective(args.epochs, workdir), n_trials=args.trials, callbacks=[record])
    for trial in sorted(study.best_trials, key=lambda t: t.values[1]):
        print(f"trial {trial.number}: val_acc {trial.values[0]:.4f}, MACs {trial.values[1] / 1e3:.1f}k, "
              f"sparsity {trial.params['sparsity']:.3f}")
    print(f"\nMLflow: {record.tracking_uri} (experiment {args.experiment!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
