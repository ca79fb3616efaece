#!/usr/bin/env python
"""A user's existing Ray Tune set-up with CHEX dropped in: the user's Tuner, searcher and run config.

    python examples/own_ray_tuner.py --trials 3

Everything Ray Tune here is the user's: ``tune.Tuner``, ``OptunaSearch``, ``TuneConfig``, ``RunConfig``.
chex-tune adds exactly three things: ``ChexSpace(...).ray()`` merged into the param space,
``ChexReporter`` in the trainable, and ``RayMlflowCallback`` in the run config (one MLflow parent run,
a child run per trial with its compact model, the Pareto front tagged at the end). MLflow goes to
MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db; Ray's results to a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from digits import batches, build_model, digits_loss, evaluate, load_digits_split, steps_per_epoch
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from chex_tune.tuning import ChexReporter, ChexSpace, RayMlflowCallback, merge_spaces


def trainable(config: dict) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    (train_x, train_y), (val_x, val_y) = load_digits_split()
    model = build_model(width=config["width"])
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    chex = ChexReporter(model, train_x[:2], config, total=config["epochs"] * steps_per_epoch(len(train_y)),
                        optimizer=optimizer, builder=build_model, builder_kwargs={"width": config["width"]})
    for epoch in range(config["epochs"]):
        for x, y in batches(train_x, train_y, epoch=epoch):
            loss = digits_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            chex.step()
        chex.report(**evaluate(model, val_x, val_y))  # to Ray Tune, with macs, params, sparsity
    chex.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--experiment", default="own_ray_tuner")
    args = parser.parse_args(argv)

    my_space = {"lr": tune.loguniform(0.01, 0.2), "width": 16, "epochs": args.epochs}
    param_space = merge_spaces(my_space, ChexSpace(sparsity=(0.3, 0.8), period=(2, 12)).ray())
    mlflow_callback = RayMlflowCallback(args.experiment, objectives="val_acc:max,macs:min", searched=["lr"])
    with tempfile.TemporaryDirectory(prefix="chex-example-") as results:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric=["val_acc", "macs"], mode=["max", "min"]),
                                        num_samples=args.trials, max_concurrent_trials=2),
            run_config=tune.RunConfig(name=args.experiment, storage_path=results, verbose=0,
                                      callbacks=[mlflow_callback]))
        grid = tuner.fit()
        rows = [(r.metrics["val_acc"], r.metrics["macs"], r.config["sparsity"], r.config["lr"])
                for r in grid if r.error is None and "val_acc" in r.metrics]
    print(f"\n{len(rows)} trials (val_acc, MACs, sparsity, lr), cheapest first:")
    for acc, macs, sparsity, lr in sorted(rows, key=lambda row: row[1]):
        print(f"  {acc:.4f}  {macs / 1e3:7.1f}k  {sparsity:.3f}  {lr:.4f}")
    print(f"\nMLflow: {mlflow_callback.tracking_uri} (experiment {args.experiment!r}; front tagged pareto=true)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
