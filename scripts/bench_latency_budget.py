#!/usr/bin/env python
"""Does a latency budget pay? CHEX with a latency budget against CHEX with a MACs budget and against uniform widths,
compared at equal measured ONNX Runtime latency.

Not part of the package (nothing imports it). Protocol: the main job's (Fashion-MNIST at 28 px, timm stem, 3 epochs
on a class-balanced 2,500 images, lr 0.1), for resnet18 and mobilenetv2_100, with one set of CHEX settings for
every arm (regrow_ratio 0.1, explore_until 0.3, period 16 steps). The deployment target is ONNX Runtime on this CPU,
batch 1, ``--threads`` threads: each model's latency table is built once (``--cache``) and every run reads it. Per
model, level (a fraction of the dense model's predicted latency) and seed:

- ``latency``: CHEX with ``latency_target`` = the level (widths in the table's measured width multiple);
- ``MACs``: CHEX with ``macs_target`` = the median MACs fraction the latency runs of that level landed on (what a
  MACs budget would be set to for the same model size), widths unrounded as a MACs budget leaves them;
- ``uniform``: every layer at the same fraction, under the same latency budget.

Every finished model is timed end to end in ONNX Runtime (``latency_measured_ms``). Accuracy at equal measured
latency: per seed, each other arm's (log measured latency -> test accuracy) points over the levels are joined
linearly and read at the latency run's measured latency (a latency outside their range is not compared); the
differences are paired by seed. Targets (issue 26): a latency-budget model lands within 5% of its budget in measured
latency; at equal measured latency it is at least as accurate as the MACs-budget model by the mean at every level.

    python scripts/bench_latency_budget.py --out benchmarks                  # the report (6 seeds)
    python scripts/bench_latency_budget.py --seeds 0 --models resnet18 --out /tmp/lb   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import chex_tune  # noqa: F401  (before timm: fixes the torchvision import)

# isort: split
import numpy as np

from chex_tune.config import RunConfig
from chex_tune.train.loop import train

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import interval, log, machine_info, md_table, recorded_command, verdict, write_report  # noqa: E402

PROTOCOL = {"dataset": "fashion-mnist", "stem": "timm", "epochs": 3, "train_subset": 2500, "val_size": 1000,
            "batch_size": 128, "lr": 0.1, "regrow_ratio": 0.1, "explore_until": 0.3, "period": 16,
            "latency_runtime": "onnxruntime"}
MODELS = ("resnet18", "mobilenetv2_100")
LEVELS = (0.5, 0.25, 0.12)
ARMS = ("latency", "MACs", "uniform")
TARGETS = {"landing": 0.05}
KEEP = ("val_acc", "test_acc", "macs_ratio", "latency_ms", "latency_measured_ms", "train_seconds")


def settings(model: str, arm: str, level: float, seed: int, macs_target: float | None, threads: int) -> dict:
    values = {**PROTOCOL, "model": model, "seed": seed, "latency_threads": threads}
    if arm == "MACs":
        return {**values, "macs_target": macs_target}
    return {**values, "latency_target": level, **({"allocator": "uniform"} if arm == "uniform" else {})}


def run(model: str, arm: str, level: float, seed: int, threads: int, macs_target: float | None = None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        result = train(RunConfig.from_dict(settings(model, arm, level, seed, macs_target, threads)), out)
    row = {"model": model, "arm": arm, "level": level, "seed": seed, "macs_target": macs_target,
           **{k: result.record()[k] for k in KEEP}, "latency_budget_ms": result.history[-1].get("latency_budget_ms")}
    log(f"{model} {arm} {level:.0%} seed {seed}: test {row['test_acc']:.4f}, MACs {row['macs_ratio']:.3f}, "
        f"latency {row['latency_ms']:.4g} ms predicted, {row['latency_measured_ms']:.4g} ms measured "
        f"({row['train_seconds']:.0f} s)")
    return row


def at_latency(points: list[tuple[float, float]], latency: float) -> float | None:
    """Accuracy read at ``latency`` on the line through (latency, accuracy) points in log latency; None outside."""
    points = sorted(points)
    xs = [math.log(x) for x, _ in points]
    x = math.log(latency)
    if not points or x < xs[0] or x > xs[-1]:
        return None
    return float(np.interp(x, xs, [y for _, y in points]))


def comparisons(rows: list[dict], model: str, other: str) -> dict[float, list[float]]:
    """Per level: latency run's test accuracy minus ``other``'s at the same measured latency, per seed that has it."""
    diffs: dict[float, list[float]] = {}
    for level in LEVELS:
        for mine in [r for r in rows if (r["model"], r["arm"], r["level"]) == (model, "latency", level)]:
            theirs = [(r["latency_measured_ms"], r["test_acc"]) for r in rows
                      if (r["model"], r["arm"], r["seed"]) == (model, other, mine["seed"])]
            value = at_latency(theirs, mine["latency_measured_ms"])
            if value is not None:
                diffs.setdefault(level, []).append(mine["test_acc"] - value)
    return diffs


def pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, half = interval([v * scale for v in values])
    return f"{mean:+.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def markdown(data: dict) -> str:
    info = data["machine"]
    rows = data["runs"]
    lines = ["## Does a latency budget pay?", "",
             f"Generated by `{data['command']}` in {data['minutes']:.0f} min; {info['cpu_model']}, ONNX Runtime, "
             f"batch 1, {data['threads']} thread(s). Protocol: Fashion-MNIST at 28 px (timm stem), 3 epochs on 2,500 "
             "images; seeds " + ", ".join(map(str, data["seeds"])) + ". Per model and level (a fraction of the dense "
             "model's predicted latency): CHEX under the latency budget; CHEX under the MACs budget set to the latency "
             "runs' median MACs fraction; uniform widths under the latency budget. Mean ± 95% interval over seeds.",
             ""]
    body = []
    for model in data["models"]:
        for level in LEVELS:
            cells = [model, f"{level:.0%}"]
            for arm in ARMS:
                mine = [r for r in rows if (r["model"], r["arm"], r["level"]) == (model, arm, level)]
                if not mine:
                    cells += ["-", "-"]
                    continue
                measured, _ = interval([r["latency_measured_ms"] for r in mine])
                cells += [f"{measured:.3g} ms", f"{100 * statistics.mean(r['test_acc'] for r in mine):.2f}"]
            body.append(cells)
    lines += md_table(["model", "level", *(f"{a}: {what}" for a in ARMS for what in ("measured ms", "test acc"))],
                      body) + [""]
    lines += ["Targets. *Landing*: |measured / budget − 1| of every latency-budget run. *Equal latency*: the latency "
              "run's test accuracy minus the other arm's read at the same measured latency on that seed's curve "
              "(pt; seeds whose latency lies outside the other arm's range are not compared: their count is shown).",
              ""]
    targets = []
    for model in data["models"]:
        for level in LEVELS:
            mine = [r for r in rows if (r["model"], r["arm"], r["level"]) == (model, "latency", level)]
            if not mine:
                continue
            landing = [abs(r["latency_measured_ms"] / r["latency_budget_ms"] - 1) for r in mine]
            reach = statistics.median(r["latency_ms"] / r["latency_budget_ms"] - 1 for r in mine)
            worst = max(landing)
            targets.append([f"{model} at {level:.0%}: lands within 5% of its budget",
                            f"median {100 * statistics.median(landing):.1f}%, largest {100 * worst:.1f}% (the table's "
                            f"prediction: {100 * reach:+.1f}% of the budget, median)",
                            verdict(worst <= TARGETS["landing"], f"{100 * (worst - TARGETS['landing']):.1f} pt")])
        for level in LEVELS:  # the MACs runs were set to the latency runs' MACs: compare them pair by pair there too
            pairs = [(a, b) for a in rows for b in rows if (a["model"], a["level"], b["model"], b["level"]) ==
                     (model, level, model, level) and a["arm"] == "latency" and b["arm"] == "MACs"
                     and a["seed"] == b["seed"]]
            if pairs:
                speed = [b["latency_measured_ms"] / a["latency_measured_ms"] for a, b in pairs]
                mine, theirs = (statistics.mean(r["macs_ratio"] for r in side) for side in zip(*pairs))
                targets.append([f"{model} at {level:.0%}: latency − MACs at equal MACs ({mine:.3f} vs {theirs:.3f} "
                                "of dense)",
                                f"{pm([a['test_acc'] - b['test_acc'] for a, b in pairs], 100)} pt; the MACs model "
                                f"measures {min(speed):.2f}-{max(speed):.2f}x the latency model's latency", "-"])
        for other in ("MACs", "uniform"):
            diffs = comparisons(rows, model, other)
            for level in LEVELS:
                values = diffs.get(level, [])
                compared = f"{len(values)} of {len(data['seeds'])} seeds"
                if not values:
                    fastest = min(r["latency_measured_ms"] for r in rows if (r["model"], r["arm"]) == (model, other))
                    mine = max(r["latency_measured_ms"] for r in rows
                               if (r["model"], r["arm"], r["level"]) == (model, "latency", level))
                    why = f": every {other} run is slower (fastest {fastest:.3g} ms)" if fastest > mine else ""
                    targets.append([f"{model} at {level:.0%}: latency − {other} at equal latency",
                                    f"none ({compared}){why}", "not reached" if why else "-"])
                    continue
                mean, half = interval([100 * v for v in values])
                ok = mean >= 0 if other == "MACs" else None
                targets.append([f"{model} at {level:.0%}: latency − {other} at equal latency (≥ 0 by the mean)"
                                if ok is not None else f"{model} at {level:.0%}: latency − {other} at equal latency",
                                f"{pm(values, 100)} pt ({compared})",
                                verdict(ok, f"{-mean:.2f} pt") if ok is not None else
                                ("beyond the interval" if half is not None and abs(mean) > half else "tie")])
    lines += md_table(["target", "measured", "verdict"], targets) + [""]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(6)))
    parser.add_argument("--threads", type=int, default=1, help="the target's threads (one: see bench_latency_model)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "chex-bench-latency-cache",
                        help="where the latency tables are built once and read by every run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--report-only", action="store_true", help="rewrite latency_budget.md from --out's JSON")
    args = parser.parse_args()
    if args.report_only:
        data = json.loads((args.out / "latency_budget.json").read_text())
        write_report(args.out, "latency_budget", data, markdown(data), echo=True)
        return 0
    import torch

    torch.set_num_threads(2)  # training on both cores; the latency target's threads are its own
    os.environ["CHEX_TUNE_CACHE"] = str(args.cache)
    started = time.perf_counter()
    rows: list[dict] = []
    for model in args.models:
        for level in LEVELS:
            rows += [run(model, "latency", level, seed, args.threads) for seed in args.seeds]
        for level in LEVELS:
            macs_target = statistics.median(r["macs_ratio"] for r in rows
                                            if (r["model"], r["arm"], r["level"]) == (model, "latency", level))
            rows += [run(model, "MACs", level, seed, args.threads, round(macs_target, 4)) for seed in args.seeds]
            rows += [run(model, "uniform", level, seed, args.threads) for seed in args.seeds]
    data = {"command": recorded_command()[0], "machine": machine_info(), "threads": args.threads,
            "protocol": PROTOCOL, "models": args.models, "seeds": args.seeds, "levels": list(LEVELS), "runs": rows,
            "minutes": (time.perf_counter() - started) / 60}
    write_report(args.out, "latency_budget", data, markdown(data), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
