"""``chex-tune sweep SPACE.yaml``: a multi-objective CHEX sweep (Ray Tune + Optuna, tracked in MLflow)."""

from __future__ import annotations

import argparse
import sys

HELP = "tune CHEX: Ray Tune trials proposed by Optuna (multi-objective), every trial an MLflow run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="search space YAML (e.g. search_spaces/fashion_mnist_resnet18.yaml)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2, help="trials running at once")
    parser.add_argument("--epochs", type=int, help="override the space's epochs")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="e.g. 0.25: four trials share a GPU")
    parser.add_argument("--cpus-per-trial", type=float, help="default: this machine's cores / --concurrent")
    parser.add_argument("--workers-per-trial", type=int, metavar="N",
                        help="train each trial on N data-parallel workers (DDP through Ray Train; the space's "
                             "batch_size is the global batch); default: the space's workers_per_trial, else 1")
    parser.add_argument("--cpus-per-worker", type=float,
                        help="default: this machine's cores / (--concurrent x N); 1 on a cluster")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs of each worker (a cluster sweep needs concurrent x N x this <= its GPUs)")
    parser.add_argument("--worker-restarts", type=int, default=0,
                        help="a multi-worker trial that loses a worker starts again from its last epoch this often "
                             "before it fails (default 0: the trial fails, the sweep goes on)")
    parser.add_argument("--optuna-sampler", default="tpe", metavar="NAME",
                        help="Optuna's sampler: tpe (default), nsga2 or random")
    parser.add_argument("--sampler", dest="optuna_sampler", action=DeprecatedAlias, help=argparse.SUPPRESS)
    parser.add_argument("--objectives", help="e.g. val_acc:max,macs:min (default: the space's)")
    parser.add_argument("--init", metavar="WEIGHTS",
                        help="every trial fine-tunes this trained dense model (a weights file or an MLflow URI, "
                             "runs:/ID or models:/NAME@ALIAS); overrides the space's init")
    parser.add_argument("--ray-address", help="a Ray cluster (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, else ./mlflow)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the space file's name)")
    parser.add_argument("--store", default="mlflow", help="local store: MLflow db, Optuna db, Ray state")
    parser.add_argument("--resume", action="store_true", help="continue the experiment's latest sweep")
    parser.add_argument("--seed", type=int, default=0, help="the Optuna sampler's seed")
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
        from chex_tune.tuning.sweep import SweepOptions, run_sweep
    except ImportError as exc:
        raise ValueError(f"chex-tune sweep needs the [tune] extra (optuna, ray[tune], mlflow): "
                         f"pip install 'chex-tune[tune]' ({exc})") from exc
    options = SweepOptions(trials=args.trials, concurrent=args.concurrent, epochs=args.epochs,
                           gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
                           optuna_sampler=args.optuna_sampler, objectives=args.objectives, ray_address=args.ray_address,
                           tracking_uri=args.tracking_uri, experiment=args.experiment, resume=args.resume,
                           seed=args.seed, store=args.store, early_stop=args.early_stop, init=args.init,
                           workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                           gpus_per_worker=args.gpus_per_worker, worker_restarts=args.worker_restarts,
                           **{k: v for k, v in (("grace", args.grace), ("eta", args.eta)) if v is not None})
    result = run_sweep(space, options, log=print)  # progress, then the table of all trials, the front first
    if result.interrupted:
        print(f"\ninterrupted: continue with  chex-tune sweep {args.space} --resume --experiment {result.experiment}")
    browse = f"chex-tune ui --store {args.store}" if result.tracking_uri.startswith("sqlite:") else result.tracking_uri
    print(f"\nbrowse the runs: {browse}")
    return 130 if result.interrupted else 0


class DeprecatedAlias(argparse.Action):
    """``--sampler``, the old name of ``--optuna-sampler`` ("sampler" is CHEX's regrowth sampler in a space)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"chex-tune sweep: {option_string} is deprecated; use --optuna-sampler", file=sys.stderr)
        setattr(namespace, self.dest, values)
