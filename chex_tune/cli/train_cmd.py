"""``chex-tune train``: one CHEX training run from the command line.

Settings come from chex_tune's defaults, then ``--config YAML`` (flat settings, as in RunConfig),
then the flags given here: a flag always wins over the file.
"""

from __future__ import annotations

import argparse
import pathlib

import yaml

from chex_tune.config import DATASETS, LATENCY_RUNTIMES, RunConfig, start_preset
from chex_tune.core.budgets import BUDGETS
from chex_tune.core.errors import UserError, load_yaml
from chex_tune.units import format_count

HELP = "train one model with CHEX (or dense with --sparsity 0) and write the compact model and metrics.json"

# flag -> RunConfig setting, for the flags that map one to one
FLAGS = ("model", "dataset", "data_dir", "epochs", "batch_size", "train_subset", "val_size", "lr", "sparsity",
         "regrow_ratio", "period", "explore_until", "macs_target", "latency_target", "latency_runtime", "seed",
         "device", "stem", "init")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="timm model name (default resnet18)")
    parser.add_argument("--dataset", choices=DATASETS, help="default fashion-mnist")
    parser.add_argument("--data-dir", help="where the dataset's files are (default: its package's location)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--train-subset", type=int, metavar="N", help="train on N images (class-balanced)")
    parser.add_argument("--val-size", type=int, metavar="N", help="validation images carved from the training set")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--sparsity", type=float, help="fraction of channels removed; 0 = dense baseline")
    parser.add_argument("--regrow-ratio", type=float)
    parser.add_argument("--period", type=int, help="optimizer steps between prune-regrow steps")
    parser.add_argument("--explore-until", type=float, help="fraction of training after which masks freeze")
    parser.add_argument("--budget", choices=tuple(BUDGETS),
                        help="what the budget counts; follows from the target given (--macs-target, --latency-target, "
                             "else channels): naming it checks that its target is given and clears the others")
    parser.add_argument("--macs-target", type=float, help="fraction of dense MACs to keep (--budget macs)")
    parser.add_argument("--latency-target", type=latency_value, metavar="FRACTION|MS",
                        help="latency budget (--budget latency): a fraction of the dense model's predicted latency "
                             "(0.25) or milliseconds (4ms), read from a latency table of --latency-runtime")
    parser.add_argument("--latency-runtime", choices=LATENCY_RUNTIMES,
                        help="predict latency_ms from a latency table of this runtime (built once per machine) and "
                             "time the finished model in it; default with a latency budget: onnxruntime")
    parser.add_argument("--stem", choices=("auto", "small", "timm"), help="small-input stem (default auto)")
    parser.add_argument("--init", metavar="WEIGHTS",
                        help="start from a trained dense model: a weights file (state_dict, checkpoint, dense "
                             "compact.pt, timm .pth/.safetensors) or an MLflow URI (runs:/ID, models:/NAME@ALIAS); "
                             "the run is then a fine-tune (default 4 epochs at lr 0.02)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--config", type=pathlib.Path, help="YAML file of settings (flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other setting, e.g. --set scorer=l1 (repeatable)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def resolve_config(args: argparse.Namespace) -> RunConfig:
    values = settings_of(args, FLAGS)
    if args.budget is not None:
        kind = BUDGETS[args.budget]
        if kind.setting is not None and values.get(kind.setting) is None:
            raise ValueError(f"--budget {kind.name} needs --{kind.setting.replace('_', '-')} ({kind.target_hint})")
        # the budget asked for, even where the YAML set another
        values.update({other.setting: None for other in BUDGETS.values() if other.setting not in (None, kind.setting)})
    return RunConfig.from_dict(values, preset=start_preset(values))


def latency_value(text: str):
    """``--latency-target``: a number is a fraction of the dense latency; text with a unit (4ms) stays text."""
    try:
        return float(text)
    except ValueError:
        return text


def settings_of(args: argparse.Namespace, flags) -> dict:
    """The settings a command was given: ``--config`` YAML, then ``--set KEY=VALUE``, then its ``flags``."""
    values: dict = {}
    if args.config is not None:
        loaded = load_yaml(args.config, "--config") or {}
        if not isinstance(loaded, dict):
            raise UserError(f"--config {args.config} must hold a mapping of settings (key: value lines), "
                            f"got {type(loaded).__name__}")
        values.update(loaded)
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} must look like KEY=VALUE (e.g. --set scorer=l1)")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: {text!r} is not a value (write text, a number, true/false or "
                            f"[a, list])") from None
    values.update({name: getattr(args, name) for name in flags if getattr(args, name, None) is not None})
    if "data_dir" in values and values["data_dir"] is not None:
        values["data_dir"] = str(pathlib.Path(values["data_dir"]).expanduser().resolve())
    return values


def run(args: argparse.Namespace) -> int:
    from chex_tune.train.loop import train

    config = resolve_config(args)
    config.train.check_teacher()
    if config.train.init is not None:  # read (an MLflow URI: fetched) and checked before any work
        from chex_tune.train.weights import fit_to_weights
        from chex_tune.tuning.track.runs import resolve_init

        given = {**settings_of(args, FLAGS), "init": resolve_init(config.train.init)}
        fitted = fit_to_weights(given, given["init"])  # input channels and stem from the weights, where not given
        config = config.replace(**{k: fitted[k] for k in ("init", "in_chans", "stem") if k in fitted})
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder (it gets compact.pt, metrics.json, config.yaml)")
    result = train(config, args.out, resume=args.resume, log=print, progress=True)
    print_summary(result, args.out)
    return 0


def print_summary(result, out: pathlib.Path) -> None:
    from chex_tune.train.artifacts import COMPACT, METRICS, RUN_CONFIG

    rows = [
        ("val accuracy", f"{result.val_acc:.4f}"),
        ("test accuracy", f"{result.test_acc:.4f}"),
        ("MACs", f"{format_count(result.macs)} of {format_count(result.dense_macs)} dense "
                 f"({1 - result.macs_ratio:.0%} fewer)"),
        ("params", f"{format_count(result.params)} of {format_count(result.dense_params)} dense"),
        ("latency", result.latency.describe()),
        ("training", f"{result.epochs} epochs, {result.train_seconds:.0f} s on {result.device}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"\n{out / COMPACT} (chex_tune.load_compact), {out / METRICS}, {out / RUN_CONFIG}")
