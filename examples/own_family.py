#!/usr/bin/env python
"""A family, and a sweep whose trials inherit, of your own trained model with your own loop.

    python examples/own_family.py
    chex-tune pareto own_family                      # the family's front, from MLflow
    chex-tune pareto own_inheriting_sweep            # the sweep's, with each trial's parent in the "from" column

The user trained ``digits.DigitsNet`` in their own code (here: a few epochs first, saved as a state dict). One
trainable, ``train_member``, serves both ways in: it starts from ``parent_model(config)`` when chex-tune hands it a
parent (a finished member's or trial's compact model), else from the user's trained weights, and ChexReporter
compresses that start to the trial's MACs budget (a fraction of the dense model's MACs, whatever the start).

- ``run_family``: one member per budget, largest first, each fine-tuned from the one before (a cascade; its CHEX
  settings: the fine-tune preset's).
- ``run_sweep(..., SweepOptions(inherit=True), chex_space=ChexSpace(macs_target=(low, high)))``: Optuna proposes
  budgets and learning rates; each trial starts from the smallest finished trial on the front above its budget.

MLflow goes to MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db; Ray's state to a temporary directory.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import torch
from digits import batches as digit_batches
from digits import build_model, digits_loss, evaluate, load_digits_split, steps_per_epoch, train_and_save

from chex_tune.config import preset_chex
from chex_tune.tuning import ChexReporter, ChexSpace, SweepOptions, parent_model, run_family, run_sweep
from chex_tune.tuning.track.store import tracking_uri_for

WIDTH = 16



def train_member(config: dict) -> None:
    """One trial (a family member, or a sweep trial): the user's loop, from the parent's model when it has one."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    (train_x, train_y), (val_x, val_y) = load_digits_split()
    model = parent_model(config)                                                # CHEX: the parent's compact model
    if model is None:  # the first member, or a trial with no finished parent yet: the user's trained model
        model = build_model(width=WIDTH)
        model.load_state_dict(torch.load(config["weights"], weights_only=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    chex = ChexReporter(model, train_x[:2], config, total=config["epochs"] * steps_per_epoch(len(train_y)),
                        optimizer=optimizer, builder=build_model, builder_kwargs={"width": WIDTH})
    for epoch in range(config["epochs"]):
        for x, y in digit_batches(train_x, train_y, epoch=epoch):
            loss = digits_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            chex.step()
        chex.report(**evaluate(model, val_x, val_y))
    chex.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.25, 0.12])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2, help="each member's or trial's fine-tune epochs")
    parser.add_argument("--dense-epochs", type=int, default=4)
    args = parser.parse_args(argv)
    tracking_uri = tracking_uri_for("mlflow")  # MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db
    with tempfile.TemporaryDirectory(prefix="chex-example-") as work:
        weights = pathlib.Path(work) / "digits_dense.pt"
        train_and_save(weights, epochs=args.dense_epochs, width=WIDTH)
        fixed = {"weights": str(weights), "epochs": args.epochs, "lr": 3e-3}
        family = run_family(train_member, levels=args.levels, param_space=fixed, store=work,
                            tracking_uri=tracking_uri, experiment="own_family", cpus_per_trial=1, log=print)
        print(f"\n{family}\n")
        options = SweepOptions(trials=args.trials, concurrent=1, cpus_per_trial=1, inherit=True, store=work,
                               tracking_uri=tracking_uri, experiment="own_inheriting_sweep", optuna_sampler="random")
        budgets = [{"macs_target": level} for level in args.levels[:2]]  # the first trials: large budgets first
        space = ChexSpace(macs_target=(0.1, 0.6), period=1, fixed=preset_chex("finetune"))  # a fine-tune's CHEX
        sweep = run_sweep(train_member, options, param_space=fixed, chex_space=space, initial_points=budgets,
                          log=print)
    return 0 if not (family.interrupted or sweep.interrupted) else 130


if __name__ == "__main__":
    raise SystemExit(main())
