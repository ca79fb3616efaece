#!/usr/bin/env python
"""The same CHEX search as custom_model_sweep.py with plain Optuna: no Ray, one process.

    python examples/optuna_only.py --trials 4

The user owns the study and the objective. chex-tune adds ``ChexSpace.suggest(trial)`` (the CHEX
parameters next to the user's own ``trial.suggest_float("lr", ...)``), ``ChexReporter(trial=trial)`` in
the loop, and ``OptunaMlflowCallback`` (every trial an MLflow run with its compact model; the Pareto
front tagged when the block ends). The front printed at the end is Optuna's own ``study.best_trials``.
MLflow goes to MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db; the study lives in memory.
"""

from __future__ import annotations

import argparse

import optuna
import torch
from digits import batches, build_model, digits_loss, evaluate, load_digits_split, steps_per_epoch

from chex_tune.tuning import ChexReporter, ChexSpace, OptunaMlflowCallback

OBJECTIVES = "val_acc:max,macs:min"
CHEX = ChexSpace(sparsity=(0.3, 0.8), period=(2, 12))


def make_objective(epochs: int):
    (train_x, train_y), (val_x, val_y) = load_digits_split()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        lr = trial.suggest_float("lr", 3e-3, 3e-2, log=True)  # the user's own hyperparameter
        config = CHEX.suggest(trial)  # the CHEX ones
        torch.manual_seed(0)
        model = build_model(width=16)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        chex = ChexReporter(model, train_x[:2], config, total=epochs * steps_per_epoch(len(train_y)),
                            optimizer=optimizer, builder=build_model, builder_kwargs={"width": 16}, trial=trial)
        for epoch in range(epochs):
            for x, y in batches(train_x, train_y, epoch=epoch):
                loss = digits_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                chex.step()
            chex.report(**evaluate(model, val_x, val_y), train_loss=loss.item())
        return chex.finish().values(OBJECTIVES)

    return objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--experiment", default="optuna_only")
    args = parser.parse_args(argv)

    torch.set_num_threads(min(2, torch.get_num_threads()))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=0))
    with OptunaMlflowCallback(args.experiment, objectives=OBJECTIVES) as record:
        study.optimize(make_objective(args.epochs), n_trials=args.trials, callbacks=[record])

    front = study.best_trials
    print(f"\nPareto front (study.best_trials, {len(front)} of {len(study.trials)} trials), cheapest first:")
    for trial in sorted(front, key=lambda t: t.values[1]):
        print(f"trial {trial.number}: val_acc {trial.values[0]:.4f}, MACs {trial.values[1] / 1e3:.1f}k, "
              f"sparsity {trial.params['sparsity']:.3f}, lr {trial.params['lr']:.4f}")
    print(f"\nMLflow: {record.tracking_uri} (experiment {args.experiment!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
