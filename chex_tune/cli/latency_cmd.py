"""``chex-tune latency``: build or show a model's latency table for a target (runtime, input, threads)."""

from __future__ import annotations

import argparse

from chex_tune.cli.inspect_cmd import positive_int

HELP = "build or show a timm model's per-layer latency table for a runtime, input shape and thread count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="timm model name, e.g. resnet18")
    parser.add_argument("--input", required=True, metavar="BxCxHxW", help="batch and input shape, e.g. 1x3x224x224")
    parser.add_argument("--runtime", default="onnxruntime", help="onnxruntime (default; its CPU provider) or torch "
                                                                 "(PyTorch eager)")
    parser.add_argument("--threads", type=positive_int, help="intra-op threads (default: this process's cores)")
    parser.add_argument("--stem", default="auto", help="auto (small for inputs of 64 px or less), small or timm")
    parser.add_argument("--num-classes", type=positive_int, default=1000)
    parser.add_argument("--cache", metavar="DIR", help="where tables live (default: CHEX_TUNE_CACHE/latency, else "
                                                       "~/.cache/chex-tune/latency)")
    parser.add_argument("--rebuild", action="store_true", help="time the table again (a damaged file, a changed "
                                                               "machine)")


def run(args: argparse.Namespace) -> int:
    import pathlib

    from chex_tune.cli._logging import configure
    from chex_tune.train.latency import LatencyTarget, table_for, table_path
    from chex_tune.train.latency.target import default_threads
    from chex_tune.train.models import create_model, resolve_stem

    configure()
    target = LatencyTarget.parse_input(args.input, runtime=args.runtime, threads=args.threads or default_threads())
    stem = resolve_stem(args.stem, max(target.input_shape[1:]))
    model = create_model(args.model, num_classes=args.num_classes, in_chans=target.input_shape[0], stem=stem).eval()
    directory = pathlib.Path(args.cache).expanduser() if args.cache else None
    path, _ = table_path(model, target, directory)
    fresh = args.rebuild or not path.exists()
    print(f"{args.model} ({stem} stem), {target.describe()}")
    if fresh:
        print(f"building {path} (each layer over a grid of widths, then whole networks to calibrate) ...", flush=True)
    table = table_for(model, target, directory=directory, rebuild=args.rebuild,
                      progress=lambda message: print(f"  {message}", flush=True))
    print(f"{'built' if fresh else 'read'} {path}" + (f" in {table.build_seconds:.0f} s" if fresh else ""))
    print(f"{len(table.layers)} layers of {len(table.shapes)} shapes; predicted dense latency {table.dense_ms:.3g} ms")
    print(f"timing spread (IQR / median) of the grid: median {100 * table.spread['median']:.1f}%, largest "
          f"{100 * table.spread['max']:.1f}%")
    points = table.fit["points"]
    print(f"calibration: {len(points)} uniform networks in multiples of {points[0]['multiple']} channels, joined by "
          f"their layers' sum (a line through them: measured = {table.fit['scale']:.3f} x sum of layers + "
          f"{table.fit['offset_ms']:.3g} ms)")
    print(f"{'uniform widths':>14} {'measured ms':>12} {'layers sum ms':>14} {'line ms':>8}")
    for point in points:
        print(f"{point['fraction']:>14.0%} {point['measured_ms']:>12.4g} {point['layers_ms']:>14.4g} "
              f"{point['line_ms']:>8.4g}")
    probes = ", ".join(f"{p['multiple']}: {p['ratio']:.2f}x" for p in table.alignment["probes"])
    print(f"width multiple: {table.width_multiple} (uniform networks in multiples of N channels, time against "
          f"aligned widths' -- {probes}); a latency budget rounds widths to it")
    return 0
