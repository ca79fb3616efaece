"""``chex-tune export EXPERIMENT``: one trial's compact model as a file (and optionally a registry version)."""

from __future__ import annotations

import argparse

from chex_tune.cli._flags import add_store_flags

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
    parser.add_argument("--format", required=True,
                        help="state: chex_tune's compact.pt (load_compact); torchscript: torch.jit.load; "
                             "onnx: onnxruntime")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    parser.add_argument("--with-normalization", action="store_true",
                        help="onnx: put the input normalisation ((x - mean) / std) into the graph, so the file takes "
                             "pixels scaled to [0, 1]; by default it takes normalised pixels, and its metadata says "
                             "the mean and std")
    parser.add_argument("--quantize", metavar="int8",
                        help="onnx: write an INT8 file (ONNX Runtime static quantization: QDQ, per-channel int8 "
                             "weights, uint8 activations), calibrated on the run's training images and checked "
                             "against the FP32 file, which is kept beside it as NAME.fp32.onnx; it passes with a "
                             "top-1 agreement of at least 0.97 on the validation split")
    parser.add_argument("--calibration", type=int, metavar="N",
                        help="--quantize: training images to calibrate on (default 256: a modest default, not "
                             "a measured optimum)")
    parser.add_argument("--int8-fallback", metavar="fp32",
                        help="--quantize: where ONNX Runtime cannot quantize an op, write the FP32 file instead "
                             "(default: refuse, naming the op)")
    parser.add_argument("--evaluate", metavar="MODULE:FUNCTION",
                        help="score the written file with your function (it gets the loaded model and returns the "
                             "validation accuracy or a dict of metrics); needed for sweeps of your own trainable")
    parser.add_argument("--register", metavar="NAME", help="also register the run's model under NAME ...")
    parser.add_argument("--alias", help="... and point this alias at the new version (e.g. champion)")
    parser.add_argument("--sweep", metavar="RUN_ID", help="choose within one sweep: its parent run id or name")
    add_store_flags(parser, "what a sweep wrote")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._logging import configure
    from chex_tune.tuning import export
    from chex_tune.tuning.track.store import open_store

    configure()
    constraint = check_arguments(args)  # before any work: a bad bound or alias should not cost an export
    client, uri = open_store(args.store, args.tracking_uri)
    trials, row, why = pick(client, args, constraint)
    result = export.export_run(client, row, args.format, args.output, evaluate=args.evaluate, tracking_uri=uri,
                               with_normalization=args.with_normalization, quantize_to=args.quantize,
                               calibration=args.calibration, int8_fallback=args.int8_fallback)
    kind = "onnx, INT8" if result.int8 else args.format
    print(f"wrote {result.path} ({kind}, {result.path.stat().st_size / 1e6:.2f} MB)")
    if result.fp32_path:
        print(f"  quantized from {result.fp32_path} (FP32, {result.fp32_path.stat().st_size / 1e6:.2f} MB)")
    if result.int8_fallback:
        print(f"  note: INT8 fell back to FP32: {result.int8_fallback}")
    for line in result.preprocessing.describe() if result.preprocessing else ():
        print(f"  {line}")
    if result.preprocessing and args.format == "onnx":
        print("  (in the file's metadata_props: onnxruntime's get_modelmeta().custom_metadata_map)")
    if result.fallback:
        print(f"  note: {result.fallback}")
    for line in result.check.describe() if result.check else ():
        print(f"{'FP32 ' if result.int8 else ''}{line}")
    for line in result.int8.describe() if result.int8 else ():
        print(line)
    print_scores(result)
    if result.check and not result.check.passed:
        print(f"the written file's outputs differ from the model's: {result.path} is kept, but do not deploy it "
              "before finding why (an operator the exporter translates differently?)")
        return 1
    if result.int8 and not result.int8.passed:
        print(f"the INT8 file disagrees with the FP32 file on too many images: {result.path} is kept and not "
              "registered; try more --calibration images, or deploy the FP32 file")
        return 1
    if args.register:
        int8 = {"file": result.path, "kind": "onnx-int8", "extra_tags": result.int8.metrics()} if result.int8 else {}
        version = export.register(client, row, trials.experiment_id, args.register, args.alias, why=why, **int8)
        print(f"registered version {version.version} of {args.register}: models:/{args.register}@{args.alias}")
        if result.int8:
            print(f"  its source is the INT8 file, logged on run {row.run_id} as {version.tags['chex.source']} "
                  "(an ONNX file: fetch it with mlflow.artifacts.download_artifacts, run it with onnxruntime)")
    return 0


def check_arguments(args: argparse.Namespace):
    """The export's constraint (None with --run), after checking what can be checked without a store."""
    from chex_tune.tuning.export import FORMATS, Constraint, check_alias
    from chex_tune.tuning.export.formats import check_folds
    from chex_tune.tuning.export.int8 import check_int8_arguments

    if args.format not in FORMATS:
        raise ValueError(f"unknown --format {args.format!r}; choose one of: {', '.join(FORMATS)}")
    if args.with_normalization:
        check_folds(args.format)
    check_int8_arguments(args.format, args.quantize, args.calibration, args.int8_fallback)
    if bool(args.register) != bool(args.alias):
        raise ValueError("--register NAME and --alias ALIAS go together (MLflow stages are deprecated: "
                         "the alias names the version)")
    if args.alias:
        check_alias(args.alias)
    return None if args.run else Constraint.parse(max_macs=args.max_macs, max_latency_ms=args.max_latency_ms,
                                                  min_acc=args.min_acc)


def pick(client, args: argparse.Namespace, constraint):
    """The experiment's trials, the chosen one and why; printed."""
    from chex_tune.train.metrics import TABLE_COLUMNS
    from chex_tune.tuning.export import choose, describe, find_run
    from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES
    from chex_tune.tuning.track.runs import read_trials

    if constraint is None:
        trials = read_trials(client, args.experiment, args.sweep, DEFAULT_OBJECTIVES)
        row, why = find_run(trials, args.run)
    else:
        trials = read_trials(client, args.experiment, args.sweep, constraint.objectives)
        row, why = choose(trials, constraint)
    searched = ", ".join(f"{name}={row.params.get(name)}" for name in row.searched)
    shown = [m for m in TABLE_COLUMNS if m in row.metrics]
    print(f"run {row.run_id} (trial {row.number}): {describe(row, shown)}"
          f"{f'; {searched}' if searched else ''}\n  chosen as {why}")
    return trials, row, why


def print_scores(result) -> None:
    """How the written file scored, beside what the run logged."""
    from chex_tune.train.metrics import VAL_ACC

    if result.exported_metrics and set(result.exported_metrics) != {VAL_ACC}:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                          for k, v in result.exported_metrics.items())
        print(f"metrics of the written file: {shown} ({result.note})")
    if result.exported_val_acc is None:
        if not result.exported_metrics:
            print(result.note)
        elif VAL_ACC not in result.exported_metrics:
            print(f"  (no {VAL_ACC} among them: the logged {VAL_ACC} {result.logged_val_acc:.4f} is not compared)")
        return
    print(f"validation accuracy of the written file: {result.exported_val_acc:.4f} "
          f"(logged {VAL_ACC} {result.logged_val_acc:.4f}; {result.note})")
    if abs(result.exported_val_acc - result.logged_val_acc) > 0.01:
        device = result.config.train.device if result.config is not None else "its own device"
        print(f"  note: they differ by more than 1 point; the run trained on {device} "
              "(bf16 autocast on CUDA scores slightly differently from float32 on the CPU)")
