#!/usr/bin/env python
"""Sweep benchmark: trials per hour with 1 vs 2 concurrent trials, and the driver's overhead per trial.

The same small Fashion-MNIST space runs twice, each trial on one CPU core: once one trial at a time,
once two at a time. Parallel efficiency = (trials/hour with 2) / (2 x trials/hour with 1): 1.0 means
two trials run as fast side by side as alone. The driver's overhead per trial (Ray start-up and
scheduling, Optuna ask/tell, MLflow logging including the model) is the sequential sweep's wall time
per trial minus the time spent inside the trial function. Writes ``sweep.json`` and ``sweep.md``.

    python scripts/bench_sweep.py [--trials 4] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import chex_tune  # noqa: F401  (before timm)

# isort: split
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import cpu_line, log, machine_info, md_table, verdict, write_report  # noqa: E402

# Sparsity is fixed so that every trial costs about the same; the searched parameters do not change cost.
SPACE = {
    "description": "sweep benchmark: ~1-minute trials on one core",
    "fixed": {"model": "resnet18", "dataset": "fashion-mnist", "stem": "timm", "epochs": 4, "train_subset": 10000,
              "val_size": 1000, "batch_size": 128, "sparsity": 0.5},
    "search": {"regrow_ratio": {"low": 0.0, "high": 0.3}, "period": {"low": 4, "high": 32, "log": True, "int": True}},
}
EFFICIENCY_TARGET = 0.8
OVERHEAD_TARGET = 0.05


def timed_sweep(concurrent: int, trials: int, store: Path) -> dict:
    space = SearchSpace.from_dict(SPACE, source="bench_sweep")
    options = SweepOptions(trials=trials, concurrent=concurrent, cpus_per_trial=1, store=str(store),
                           experiment=f"bench-{concurrent}", optuna_sampler="random")
    start = time.perf_counter()
    result = run_sweep(space, options, log=log)
    wall = time.perf_counter() - start
    finished = [r for r in result.rows if r.finished]
    inside = [r.metrics["trial_seconds"] for r in finished]
    return {"concurrent": concurrent, "trials": trials, "finished": len(finished), "wall_seconds": wall,
            "trials_per_hour": len(finished) / wall * 3600, "trial_seconds": inside,
            "trial_seconds_median": statistics.median(inside),
            "train_seconds": [r.metrics["train_seconds"] for r in finished]}


def markdown(data: dict, trials: int) -> str:
    one, two = data["sequential"], data["concurrent"]
    efficiency, overhead = data["parallel_efficiency"], data["driver_overhead_seconds_per_trial"]
    overhead_share = data["driver_overhead_share"]
    mean_trial = statistics.mean(one["trial_seconds"])
    targets = [("parallel efficiency, 2 concurrent trials (1 core each) vs 1", f"{efficiency:.2f}",
                verdict(efficiency >= EFFICIENCY_TARGET, f"{EFFICIENCY_TARGET - efficiency:.2f}")),
               ("driver overhead per trial / trial time",
                f"{overhead:.1f} s / {mean_trial:.0f} s = {overhead_share:.1%}",
                verdict(overhead_share <= OVERHEAD_TARGET, f"{(overhead_share - OVERHEAD_TARGET) * 100:.1f} pt")),
               ("1 vs 4 trials sharing one GPU", "not measured: no GPU was lent for this run", "NOT RUN")]
    md = ["# Sweep benchmark", "",
          f"{cpu_line(data['machine'])}. `python scripts/bench_sweep.py "
          f"--trials {trials}`. Each trial (the main job's): resnet18 (timm stem) on 10,000 Fashion-MNIST "
          "images, 4 epochs, "
          "S = 0.5, one CPU core (torch threads = 1); the whole chain runs (local Ray, Optuna with its SQLite "
          "study, MLflow SQLite store with the compact model logged as artifacts and as an mlflow.pytorch model).",
          "", *md_table(["sweep", "trials", "wall time", "trials/hour", "time inside a trial (median)"],
                        ([f"{run['concurrent']} at a time", f"{run['finished']}/{run['trials']}",
                          f"{run['wall_seconds']:.0f} s", f"{run['trials_per_hour']:.1f}",
                          f"{run['trial_seconds_median']:.1f} s"] for run in (one, two))),
          "", *md_table(["target", "measured", "verdict"], targets)]
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        one = timed_sweep(1, args.trials, Path(tmp) / "one")
        two = timed_sweep(2, args.trials, Path(tmp) / "two")
    efficiency = two["trials_per_hour"] / (2 * one["trials_per_hour"])
    overhead = one["wall_seconds"] / one["trials"] - statistics.mean(one["trial_seconds"])
    overhead_share = overhead / statistics.mean(one["trial_seconds"])
    data = {"machine": machine_info(), "space": SPACE, "sequential": one, "concurrent": two,
            "parallel_efficiency": efficiency, "driver_overhead_seconds_per_trial": overhead,
            "driver_overhead_share": overhead_share}
    write_report(args.out, "sweep", data, markdown(data, args.trials), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
