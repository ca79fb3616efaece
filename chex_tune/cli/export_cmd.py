"""``chex-tune export EXPERIMENT``: one trial's compact model as a file (and optionally a registry version)."""

from __future__ import annotations

import argparse

HELP = "export a front member (by a MACs/latency/accuracy constraint or --run) as state, TorchScript or ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="MLflow experiment the sweep(s) wrote")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--run", metavar="ID", help="this trial's run id")
    choice.add_argument("--max-macs", metavar="X",
                        help="the most accurate front member with at most X MACs (2.5e6 or 2.5M)")
    choice.add_argument("--max-latency-ms", metavar="L",
                        help="the most accurate front member with a CPU latency of at most L ms")
    choice.add_argument("--min-acc", metavar="A",
                        help="the cheapest front member with a validation accuracy of at least A (0.9 or 90%%)")
    parser.add_argument("--format", required=True, choices=("state", "torchscript", "onnx"),
                        help="state: chex_tune's compact.pt (load_compact); torchscript: torch.jit.load; "
                             "onnx: onnxruntime")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    parser.add_argument("--evaluate", metavar="MODULE:FUNCTION",
                        help="score the written file with your function (it gets the loaded model and returns the "
                             "validation accuracy or a dict of metrics); needed for sweeps of your own trainable")
    parser.add_argument("--register", metavar="NAME", help="also register the run's model under NAME ...")
    parser.add_argument("--alias", help="... and point this alias at the new version (e.g. champion)")
    parser.add_argument("--sweep", metavar="RUN_ID", help="choose within one sweep: its parent run id or name")
    parser.add_argument("--store", default="mlflow", metavar="DIR", help="the local store a sweep wrote")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow server (default: MLFLOW_TRACKING_URI, "
                                                              "else the store's database)")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._logging import configure
    from chex_tune.tuning.export import Constraint, check_alias, choose, describe, export_run, find_run, register
    from chex_tune.tuning.runs import DEFAULT_OBJECTIVES, open_store, read_trials

    configure()
    if bool(args.register) != bool(args.alias):
        raise ValueError("--register NAME and --alias ALIAS go together (MLflow stages are deprecated: "
                         "the alias names the version)")
    if args.alias:
        check_alias(args.alias)  # before any work: a bad alias should not cost an export
    constraint = None if args.run else Constraint.parse(max_macs=args.max_macs, max_latency_ms=args.max_latency_ms,
                                                        min_acc=args.min_acc)  # a bad bound before any store
    client, uri = open_store(args.store, args.tracking_uri)
    if constraint is None:
        trials = read_trials(client, args.experiment, args.sweep, DEFAULT_OBJECTIVES)
        row, why = find_run(trials, args.run)
    else:
        trials = read_trials(client, args.experiment, args.sweep, constraint.objectives)
        row, why = choose(trials, constraint)
    searched = ", ".join(f"{name}={row['params'].get(name)}" for name in row["searched"])
    shown = [m for m in ("val_acc", "test_acc", "macs", "params", "latency_ms") if m in row["metrics"]]
    print(f"run {row['run_id']} (trial {row['number']}): {describe(row, shown)}"
          f"{f'; {searched}' if searched else ''}\n  chosen as {why}")
    result = export_run(client, row, args.format, args.output, evaluate=args.evaluate, tracking_uri=uri)
    size = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({args.format}, {size:.2f} MB)")
    if result.fallback:
        print(f"  note: {result.fallback}")
    if result.exported_metrics and set(result.exported_metrics) != {"val_acc"}:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                          for k, v in result.exported_metrics.items())
        print(f"metrics of the written file: {shown} ({result.note})")
    if result.exported_val_acc is None:
        if not result.exported_metrics:
            print(result.note)
        elif "val_acc" not in result.exported_metrics:
            print(f"  (no val_acc among them: the logged val_acc {result.logged_val_acc:.4f} is not compared)")
    else:
        print(f"validation accuracy of the written file: {result.exported_val_acc:.4f} "
              f"(logged val_acc {result.logged_val_acc:.4f}; {result.note})")
        if abs(result.exported_val_acc - result.logged_val_acc) > 0.01:
            device = result.config.train.device if result.config is not None else "its own device"
            print(f"  note: they differ by more than 1 point; the run trained on {device} "
                  "(bf16 autocast on CUDA scores slightly differently from float32 on the CPU)")
    if args.register:
        version = register(client, row, trials.experiment_id, args.register, args.alias, why=why)
        print(f"registered version {version.version} of {args.register}: models:/{args.register}@{args.alias}")
    return 0
