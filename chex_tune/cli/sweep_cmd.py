"""``chex-tune sweep SPACE.yaml``: a multi-objective CHEX sweep (Ray Tune + Optuna, tracked in MLflow)."""

from __future__ import annotations

import argparse

from chex_tune.cli._tables import METRIC_TITLES, markdown, metric_cells, searched_names, short

HELP = "tune CHEX: Ray Tune trials proposed by Optuna (multi-objective), every trial an MLflow run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="search space YAML (e.g. search_spaces/fashion_mnist_resnet18.yaml)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2, help="trials running at once")
    parser.add_argument("--epochs", type=int, help="override the space's epochs")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="e.g. 0.25: four trials share a GPU")
    parser.add_argument("--cpus-per-trial", type=float, help="default: this machine's cores / --concurrent")
    parser.add_argument("--sampler", choices=("tpe", "nsga2", "random"), default="tpe")
    parser.add_argument("--objectives", help="e.g. val_acc:max,macs:min (default: the space's)")
    parser.add_argument("--ray-address", help="a Ray cluster (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, else ./mlflow)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the space file's name)")
    parser.add_argument("--store", default="mlflow", help="local store: MLflow db, Optuna db, Ray state")
    parser.add_argument("--resume", action="store_true", help="continue the experiment's latest sweep")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--early-stop", action="store_true",
                        help="stop trials whose objectives fall behind at a rung (Pareto-ASHA; KILLED runs)")
    parser.add_argument("--grace", type=int, help="--early-stop: epochs before the first rung (default 2)")
    parser.add_argument("--eta", type=int, help="--early-stop: keep the best 1/ETA of each rung (default 3)")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._logging import configure
    from chex_tune.tuning.space import SearchSpace

    space = SearchSpace.load(args.space)  # validated before anything heavy starts
    try:
        configure(quiet_sweep=True)
        from chex_tune.tuning.search import SweepOptions, run_space_sweep
    except ImportError as exc:
        raise ValueError(f"chex-tune sweep needs the [tune] extra (optuna, ray[tune], mlflow): "
                         f"pip install 'chex-tune[tune]' ({exc})") from exc
    options = SweepOptions(trials=args.trials, concurrent=args.concurrent, epochs=args.epochs,
                           gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
                           sampler=args.sampler, objectives=args.objectives, ray_address=args.ray_address,
                           tracking_uri=args.tracking_uri, experiment=args.experiment, resume=args.resume,
                           seed=args.seed, store=args.store, early_stop=args.early_stop,
                           **{k: v for k, v in (("grace", args.grace), ("eta", args.eta)) if v is not None})
    result = run_space_sweep(space, options, log=print)
    print()
    print(trials_table(result))
    if result.interrupted:
        print(f"\ninterrupted: continue with  chex-tune sweep {args.space} --resume --experiment {result.experiment}")
    browse = f"chex-tune ui --store {args.store}" if result.tracking_uri.startswith("sqlite:") else result.tracking_uri
    print(f"\nbrowse the runs: {browse}")
    return 130 if result.interrupted else 0


def trials_table(result) -> str:
    """All trials as a Markdown table, cheapest first, front members starred."""
    searched = searched_names(result.rows)
    header = ["front", "trial", "status", *METRIC_TITLES, *searched, "run id"]
    order = sorted(result.rows, key=lambda r: (r["status"] != "FINISHED", r["metrics"].get("macs", float("inf"))))
    lines = markdown(header, [["*" if row["rank"] == 0 else "", str(row["number"]), status(row),
                               *metric_cells(row["metrics"]), *[short(row["params"].get(n)) for n in searched],
                               row["run_id"]] for row in order])
    front = len(result.front)
    lines.append(f"\n{front} of {len(result.rows)} trials on the Pareto front "
                 f"({', '.join(map(str, result.objectives))}); failed trials: "
                 f"{sum(r['status'] == 'FAILED' for r in result.rows)}"
                 + (f"; stopped early: {len(result.stopped)}" if result.stopped else ""))
    return "\n".join(lines)


def status(row: dict) -> str:
    return f"STOPPED @{row['stopped_at']}" if row.get("stopped_at") is not None else row["status"]
