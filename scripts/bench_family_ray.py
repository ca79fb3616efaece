"""The family on Ray Tune against the same cascade in one process: Ray's overhead and the members' numbers.

    python scripts/bench_family_ray.py --seeds 0 1 --cache DIR --out benchmarks --before DIR

Per seed, from the seed's dense model (``bench_front.train_dense``, the front's CPU protocol), with the same
settings (the fine-tune preset's): the bare cascade in this process (``train()`` of each member from the one before:
no MLflow, no reference evaluation), ``run_family`` on Ray Tune (trials, MLflow runs with each member's files and
mlflow.pytorch model, one member at a time) and, with ``--before DIR`` (a checkout of the release whose family ran
in one process, e.g. ``git worktree add DIR 461d331``), that release's ``run_family`` in a process of its own: the
same recording, no Ray. Reported: wall times, the members' training seconds, and whether the members' val and test
accuracies are equal to the last digit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chex_tune  # noqa: F401  (before timm)

# isort: split
from chex_tune.config import RunConfig
from chex_tune.train.loop import train
from chex_tune.tuning.family import run_family

sys.path.insert(0, str(Path(__file__).parent))
from bench_front import train_dense  # noqa: E402
from bench_train import MODES  # noqa: E402
from benchlib import interval, log, machine_info, machine_name, md_table, recorded_argv, write_report  # noqa: E402

LEVELS = (0.5, 0.25, 0.12, 0.06, 0.03)


def in_process(settings: dict, levels, init: Path, workdir: Path) -> dict:
    """The cascade, each member trained here with ``train()`` from the one before."""
    started, members, start = time.perf_counter(), [], init
    for level in levels:
        out = workdir / f"member-{level:g}"
        result = train(RunConfig.from_dict({**settings, "init": str(start), "macs_target": level}, preset="finetune"),
                       out)
        members.append({"level": level, "val_acc": result.val_acc, "test_acc": result.test_acc,
                        "macs_ratio": result.macs_ratio, "train_seconds": result.train_seconds})
        start = out / "compact.pt"
    return {"wall_seconds": time.perf_counter() - started, "members": members}


def on_ray(settings: dict, levels, init: Path, workdir: Path, seed: int) -> dict:
    started = time.perf_counter()
    result = run_family(settings, levels=levels, init=str(init), store=str(workdir / "store"),
                        experiment=f"bench-{seed}", log=log)
    wall = time.perf_counter() - started
    members = [{"level": float(m["key"]), "val_acc": m["val_acc"], "test_acc": m["test_acc"],
                "macs_ratio": m["macs_ratio"], "train_seconds": m["train_seconds"]} for m in result.members]
    return {"wall_seconds": wall, "members": members}


BEFORE = """
import json, sys, time
from chex_tune.tuning.family import run_family
settings, levels, init, store = json.loads(sys.argv[1])
started = time.perf_counter()
result = run_family(settings, levels=levels, init=init, store=store, experiment="before", log=lambda _m: None)
members = [{"level": float(m["key"]), "val_acc": m["val_acc"], "test_acc": m["test_acc"],
            "macs_ratio": m["macs_ratio"], "train_seconds": m["train_seconds"]} for m in result.members]
print("RESULT " + json.dumps({"wall_seconds": time.perf_counter() - started, "members": members}))
"""


def before(checkout: Path, settings: dict, levels, init: Path, workdir: Path) -> dict:
    """The earlier release's in-process family, run from its checkout (its wall time counted from its call)."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-c", BEFORE, json.dumps([settings, levels, str(init),
                                                                     str(workdir / "store")])],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def equal(a: dict, b: dict) -> str:
    same = all((x["val_acc"], x["test_acc"]) == (y["val_acc"], y["test_acc"])
               for x, y in zip(a["members"], b["members"]))
    return "yes" if same else "no"


def training(run: dict) -> str:
    return f"{sum(m['train_seconds'] for m in run['members']):.1f}"


def markdown(data: dict) -> str:
    rows, ratios, bare = [], [], []
    for run in data["runs"]:
        here, ray, old = run["in_process"], run["ray"], run.get("before")
        bare.append(ray["wall_seconds"] / here["wall_seconds"])
        if old is not None:
            ratios.append(ray["wall_seconds"] / old["wall_seconds"])
        rows.append([str(run["seed"]), f"{here['wall_seconds']:.1f}",
                     f"{old['wall_seconds']:.1f}" if old else "-", f"{ray['wall_seconds']:.1f}",
                     f"{ratios[-1]:.3f}" if old else "-", f"{bare[-1]:.3f}",
                     " / ".join(training(r) for r in (here, old, ray) if r is not None),
                     " / ".join(equal(r, ray) for r in (here, old) if r is not None),
                     " / ".join(f"{m['test_acc']:.4f}" for m in ray["members"])])

    def said(values: list[float]) -> str:
        mean, half = interval(values)
        return f"{mean:.3f}" + (f" ± {half:.3f} (95% t-interval)" if half is not None else "")
    lines = [
        "# The family on Ray Tune against the same cascade in one process", "",
        f"Protocol: {data['protocol']}; levels {data['levels']}; fine-tune preset; machine: {data['machine']}.",
        f"Command: `{' '.join(data['argv'])}`", "",
        "Wall seconds from the call to its return, given the dense model. *bare cascade*: `train()` of each member "
        "in this process, nothing else; *in-process family*: the release before (its `run_family` ran the members "
        "one after another in its own process, evaluated the --init model once and recorded every member in MLflow, "
        "as the family on Ray does); *on Ray*: this release's `run_family` (Ray started and stopped, one trial actor, "
        "MLflow written from the driver).", "",
        *md_table(["seed", "bare cascade, s", "in-process family, s", "family on Ray, s", "Ray / in-process family",
                   "Ray / bare cascade", "training s (bare / in-process / Ray)", "accuracies equal (bare / before)",
                   "members' test acc (Ray)"], rows), "",
        f"Family on Ray / in-process family: {said(ratios) if ratios else '-'}; on Ray / bare cascade: {said(bare)}; "
        f"seeds {[run['seed'] for run in data['runs']]}; target: ≤ 1.1 against the in-process family.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--cache", type=Path, help="keep the dense models here between runs (default: not kept)")
    parser.add_argument("--before", type=Path, help="a checkout of the release with the in-process family")
    args = parser.parse_args(argv)
    base = dict(MODES["cpu"])
    levels = sorted(args.levels, reverse=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            init, _ = train_dense(base, seed, args.cache or Path(tmp))
            settings = {**{k: v for k, v in base.items() if k not in ("epochs", "lr", "norm_init")}, "seed": seed}
            here = in_process(settings, levels, init, Path(tmp) / f"here-{seed}")
            log(f"seed {seed}: in process {here['wall_seconds']:.1f} s")
            ray = on_ray(settings, levels, init, Path(tmp) / f"ray-{seed}", seed)
            log(f"seed {seed}: on Ray {ray['wall_seconds']:.1f} s")
            runs.append({"seed": seed, "in_process": here, "ray": ray})
            if args.before is not None:
                runs[-1]["before"] = before(args.before, settings, levels, init, Path(tmp) / f"before-{seed}")
                log(f"seed {seed}: in-process family (before) {runs[-1]['before']['wall_seconds']:.1f} s")
    data = {"argv": recorded_argv(sys.argv if argv is None else ["scripts/bench_family_ray.py", *argv]),
            "machine": machine_name(machine_info()), "protocol": base, "levels": levels, "runs": runs}
    write_report(args.out, "family_ray", data, markdown(data), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
