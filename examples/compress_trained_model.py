#!/usr/bin/env python
"""Compress your trained model: your own module and weights file -> a front of compact models -> an ONNX file.

    python examples/compress_trained_model.py --weights my_digits.pt --trials 6
    python examples/compress_trained_model.py                  # without --weights: trains the dense model first

The model is yours (``digits.DigitsNet``, not a timm model), and so are the data, the loss and the loop. You bring
the trained dense model as a ``state_dict`` file. Each trial of the sweep loads those weights into a fresh model,
fine-tunes it with ``ChexReporter`` down to a MACs budget that Optuna proposes (3-60% of the dense model's) and
reports; the front is read back from MLflow, and the most accurate member under ``--max-macs`` is exported to
ONNX and scored by your evaluate function. MLflow goes to MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import torch
from digits import batches as digit_batches
from digits import (
    build_model,
    digits_loss,
    evaluate,
    load_digits_split,
    steps_per_epoch,
    train_and_save,
    validation_accuracy,
)
from ray import tune

from chex_tune.tuning import ChexReporter, ChexSpace, SweepOptions, open_store, read_trials, run_sweep
from chex_tune.tuning.export import Constraint, choose, export_run
from chex_tune.tuning.track.store import tracking_uri_for

WIDTH = 16



def fine_tune(config: dict) -> None:
    """One trial: your weights, your loop; ChexReporter prunes and regrows while it fine-tunes."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    (train_x, train_y), (val_x, val_y) = load_digits_split()
    model = build_model(width=WIDTH)
    model.load_state_dict(torch.load(config["weights"], weights_only=True))  # the trained start, before CHEX
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    chex = ChexReporter(model, train_x[:2], config, total=config["epochs"] * steps_per_epoch(len(train_y)),
                        optimizer=optimizer, builder=build_model, builder_kwargs={"width": WIDTH})
    for epoch in range(config["epochs"]):
        for x, y in digit_batches(train_x, train_y, epoch=epoch):
            optimizer.zero_grad()
            digits_loss(model(x), y).backward()
            optimizer.step()
            chex.step()
        chex.report(**evaluate(model, val_x, val_y))
    chex.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=pathlib.Path, help="your trained dense model (a state_dict file)")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3, help="each trial's fine-tune epochs")
    parser.add_argument("--max-macs", default="500k", help="the export's MACs bound (the dense model: ~670k)")
    parser.add_argument("--experiment", default="compress_trained_model")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="chex-example-") as work:
        weights = args.weights or pathlib.Path(work) / "dense.pt"
        if args.weights is None:
            train_and_save(weights, epochs=8, width=WIDTH)
        options = SweepOptions(trials=args.trials, concurrent=2, cpus_per_trial=1, experiment=args.experiment,
                               store=work, tracking_uri=tracking_uri_for("mlflow"))
        result = run_sweep(fine_tune, options, param_space={"weights": str(weights.resolve()), "epochs": args.epochs,
                                                            "lr": tune.loguniform(1e-3, 1e-2)},
                           chex_space=ChexSpace(macs_target=(0.03, 0.6), period=(2, 8), fixed={"explore_until": 0.5}),
                           objectives="val_acc:max,macs:min", log=print)
        client, _ = open_store(work, result.tracking_uri)
        trials = read_trials(client, args.experiment, result.sweep)
        row, why = choose(trials, Constraint.parse(max_macs=args.max_macs))
        exported = export_run(client, row, "onnx", pathlib.Path(work) / "model.onnx", evaluate=validation_accuracy)
        size = exported.path.stat().st_size
        print(f"\nchosen: run {row.run_id}, {why}\nONNX: {size} bytes, validation accuracy of the file "
              f"{exported.exported_val_acc:.4f} (logged {exported.logged_val_acc:.4f})")
    return 0 if not result.interrupted else 130


if __name__ == "__main__":
    raise SystemExit(main())
