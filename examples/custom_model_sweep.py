#!/usr/bin/env python
"""A CHEX sweep of your own model, data, loss and loop, run by Ray Tune through chex-tune's API.

    python examples/custom_model_sweep.py --trials 3
    chex-tune pareto custom_model_sweep                       # the front again, from MLflow
    PYTHONPATH=examples chex-tune export custom_model_sweep --max-macs 50k --format onnx -o digits.onnx \
        --evaluate digits:validation_accuracy

The model (``digits.DigitsNet``) is not a timm model; the data is scikit-learn's bundled digits; the
loop, the optimizer and the loss are the user's. chex-tune adds three things: ``ChexSpace`` (the CHEX
parameters to search, merged with the user's learning rate), ``ChexReporter`` in the loop, and
``run_sweep`` (Ray Tune trials proposed by Optuna, objectives ``val_acc:max,macs:min``, every trial an
MLflow run with its compact model). MLflow goes to MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db; Ray's
and Optuna's state go to a temporary directory. Runs on 2 CPU cores in a few minutes.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from digits import batches as digit_batches
from digits import build_model, digits_loss, evaluate, load_digits_split, steps_per_epoch
from ray import tune

from chex_tune.tuning import ChexReporter, ChexSpace, SweepOptions, run_sweep
from chex_tune.tuning.track.store import tracking_uri_for


def train_digits(config: dict) -> None:
    """One trial: the user's training loop, with the three CHEX lines marked."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    (train_x, train_y), (val_x, val_y) = load_digits_split()
    model = build_model(width=config["width"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    chex = ChexReporter(model, train_x[:2], config, total=config["epochs"] * steps_per_epoch(len(train_y)),  # CHEX
                        optimizer=optimizer, builder=build_model, builder_kwargs={"width": config["width"]})
    for epoch in range(config["epochs"]):
        for x, y in digit_batches(train_x, train_y, epoch=epoch):
            loss = digits_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            chex.step()                                                                           # CHEX
        chex.report(**evaluate(model, val_x, val_y), train_loss=loss.item())                    # CHEX
    chex.finish()  # compact model + files become the trial's result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--experiment", default="custom_model_sweep")
    args = parser.parse_args(argv)

    param_space = {"lr": tune.loguniform(3e-3, 3e-2), "width": 16, "epochs": args.epochs}
    chex_space = ChexSpace(sparsity=(0.3, 0.8), period=(2, 12))
    tracking_uri = tracking_uri_for("mlflow")  # MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db
    with tempfile.TemporaryDirectory(prefix="chex-example-") as work:
        options = SweepOptions(trials=args.trials, concurrent=args.concurrent, cpus_per_trial=1, optuna_sampler="tpe",
                               experiment=args.experiment, store=work, tracking_uri=tracking_uri)
        result = run_sweep(train_digits, options, param_space=param_space, chex_space=chex_space,
                           objectives="val_acc:max,macs:min", log=print)

    print(f"\nPareto front of {result.experiment!r} ({len(result.front)} of {len(result.rows)} trials), "
          "cheapest first:")
    print(f"{'run id':<34} {'val_acc':>8} {'MACs':>9} {'sparsity':>9} {'lr':>8}")
    for row in sorted(result.front, key=lambda r: r.metrics["macs"]):
        m, p = row.metrics, row.params
        print(f"{row.run_id:<34} {m['val_acc']:>8.4f} {m['macs'] / 1e3:>8.1f}k {float(p['sparsity']):>9.3f} "
              f"{float(p['lr']):>8.4f}")
    print(f"\nMLflow: {result.tracking_uri} (experiment {result.experiment!r})")
    return 0 if not result.interrupted else 130


if __name__ == "__main__":
    raise SystemExit(main())
