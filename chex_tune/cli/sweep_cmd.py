"""``chex-tune sweep SPACE.yaml``: a multi-objective CHEX sweep (Ray Tune + Optuna, tracked in MLflow)."""

from __future__ import annotations

import argparse
import sys

HELP = "tune CHEX: Ray Tune trials proposed by Optuna (multi-objective), every trial an MLflow run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chex_tune.cli._flags import add_fields, add_store_flags
    from chex_tune.tuning.options import SweepOptions

    parser.add_argument("space", help="search space YAML (e.g. search_spaces/fashion_mnist_resnet18.yaml)")
    add_fields(parser, SweepOptions, skip=("store", "tracking_uri"))
    add_store_flags(parser, "MLflow db, Optuna db, Ray state")
    parser.add_argument("--sampler", dest="optuna_sampler", action=DeprecatedAlias, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._commands import command
    from chex_tune.cli._logging import configure
    from chex_tune.tuning.space import SearchSpace

    space = SearchSpace.load(args.space)  # validated before anything heavy starts
    try:
        configure(quiet_sweep=True)
        from chex_tune.cli._flags import given
        from chex_tune.tuning.sweep import SweepOptions, run_sweep
    except ImportError as exc:
        raise ValueError(f"chex-tune sweep needs the [tune] extra (optuna, ray[tune], mlflow): "
                         f"pip install 'chex-tune[tune]' ({exc})") from exc
    options = SweepOptions(**given(args, SweepOptions))
    result = run_sweep(space, options, log=print)  # progress, then the table of all trials, the front first
    if result.interrupted:
        again = command("sweep", args.space, "--resume", "--experiment", result.experiment)
        print(f"\ninterrupted: continue with  {again}")
    browse = command("ui", "--store", args.store) if result.tracking_uri.startswith("sqlite:") else result.tracking_uri
    print(f"\nbrowse the runs: {browse}")
    return 130 if result.interrupted else 0


class DeprecatedAlias(argparse.Action):
    """``--sampler``, the old name of ``--optuna-sampler`` ("sampler" is CHEX's regrowth sampler in a space)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"chex-tune sweep: {option_string} is deprecated; use --optuna-sampler", file=sys.stderr)
        setattr(namespace, self.dest, values)
