"""``chex-tune family``: one compact model per MACs budget from one trained model, each an MLflow run."""

from __future__ import annotations

import argparse
import pathlib

from chex_tune.config import DATASETS
from chex_tune.tuning.options import FAMILY_OPTIONS

HELP = "a family of compact models (one per MACs budget) from one trained model, each an MLflow run"
FLAGS = ("model", "dataset", "data_dir", "epochs", "batch_size", "train_subset", "val_size", "lr", "seed", "device",
         "stem")


# Where and how the members run (a family is a sweep on Ray Tune): chex-tune sweep's flags, less the store's
RAY_FLAGS = tuple(name for name in FAMILY_OPTIONS if name not in ("experiment", "store", "tracking_uri"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chex_tune.cli._flags import add_fields, add_store_flags
    from chex_tune.config import FINETUNE, TrainConfig
    from chex_tune.tuning.options import DEFAULT_LEVELS, SHAPES, SweepOptions

    parser.add_argument("--init", metavar="WEIGHTS",
                        help="the trained dense model (a weights file or an MLflow URI); default: train it first")
    levels = " ".join(f"{level:g}" for level in DEFAULT_LEVELS)
    parser.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS), metavar="F",
                        help=f"MACs budgets, fractions of the dense model's (default {levels})")
    parser.add_argument("--shape", default=SHAPES[0], help=f"{SHAPES[0]} (each member from the previous one; "
                                                         f"default) or {SHAPES[1]} (each from --init)")
    parser.add_argument("--model", help=f"timm model name (default {TrainConfig.model})")
    parser.add_argument("--dataset", choices=DATASETS, help=f"default {TrainConfig.dataset}")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, help=f"each member's fine-tune epochs (default {FINETUNE['epochs']})")
    parser.add_argument("--lr", type=float, help=f"the members' learning rate (default {FINETUNE['lr']})")
    parser.add_argument("--max-drop", type=float, metavar="PT",
                        help="stop descending at the first member more than PT percentage points of val accuracy "
                             "below the dense model's (--init, evaluated once, else the dense member); it is "
                             "recorded but tagged chex.beyond_max_drop and left off the front")
    parser.add_argument("--dense-epochs", type=int,
                        help=f"without --init: the dense model's epochs (default {TrainConfig.epochs})")
    for flag in ("--batch-size", "--train-subset", "--val-size", "--seed"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--stem", choices=("auto", "small", "timm"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--config", type=pathlib.Path, help="YAML file of settings (flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other setting")
    parser.add_argument("--experiment", default="family", help="MLflow experiment (default: family)")
    add_fields(parser, SweepOptions, only=RAY_FLAGS)  # --concurrent: independent members at once
    add_store_flags(parser, "MLflow db, Ray state and the members' files")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._commands import command
    from chex_tune.cli._logging import configure
    from chex_tune.cli.train_cmd import settings_of
    from chex_tune.tuning.family import run_family

    configure(quiet_sweep=True)
    settings = settings_of(args, FLAGS)
    ray = {name: getattr(args, name) for name in RAY_FLAGS if getattr(args, name) is not None}
    result = run_family(settings, levels=args.levels, init=args.init, shape=args.shape, experiment=args.experiment,
                        store=args.store, tracking_uri=args.tracking_uri, dense_epochs=args.dense_epochs,
                        max_drop=args.max_drop, log=print, **ray)
    print(f"\n{result}\n\nbrowse: {command('pareto', args.experiment, '--store', args.store)}")
    if result.interrupted:
        again = command("family", "--resume", "--experiment", args.experiment, "--store", args.store)
        print(f"\ninterrupted: continue with  {again} (and the settings given here)")
        return 130
    return 0
