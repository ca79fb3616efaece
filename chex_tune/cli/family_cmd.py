"""``chex-tune family``: one compact model per MACs budget from one trained model, each an MLflow run."""

from __future__ import annotations

import argparse
import pathlib

from chex_tune.config import DATASETS

HELP = "a family of compact models (one per MACs budget) from one trained model, each an MLflow run"
FLAGS = ("model", "dataset", "data_dir", "epochs", "batch_size", "train_subset", "val_size", "lr", "seed", "device",
         "stem")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", metavar="WEIGHTS",
                        help="the trained dense model (a weights file or an MLflow URI); default: train it first")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.25, 0.12, 0.06, 0.03], metavar="F",
                        help="MACs budgets, fractions of the dense model's (default 0.5 0.25 0.12 0.06 0.03)")
    parser.add_argument("--shape", default="cascade",
                        help="cascade (each member from the previous one; default) or independent (each from --init)")
    parser.add_argument("--model", help="timm model name (default resnet18)")
    parser.add_argument("--dataset", choices=DATASETS, help="default fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, help="each member's fine-tune epochs (default 4)")
    parser.add_argument("--lr", type=float, help="the members' learning rate (default 0.02)")
    parser.add_argument("--dense-epochs", type=int, help="without --init: the dense model's epochs (default 30)")
    for flag in ("--batch-size", "--train-subset", "--val-size", "--seed"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--stem", choices=("auto", "small", "timm"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--config", type=pathlib.Path, help="YAML file of settings (flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other setting")
    parser.add_argument("--experiment", default="family", help="MLflow experiment (default: family)")
    parser.add_argument("--store", default="mlflow", help="local store: MLflow db, the members' files")
    parser.add_argument("--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, else the store's)")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._logging import configure
    from chex_tune.cli.train_cmd import settings_of
    from chex_tune.tuning.family import run_family

    configure()
    settings = settings_of(args, FLAGS)
    result = run_family(settings, levels=args.levels, init=args.init, shape=args.shape, experiment=args.experiment,
                        store=args.store, tracking_uri=args.tracking_uri, dense_epochs=args.dense_epochs, log=print)
    print(f"\n{result}\n\nbrowse: chex-tune pareto {args.experiment} --store {args.store}")
    return 0
