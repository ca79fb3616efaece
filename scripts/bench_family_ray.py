"""The family on Ray Tune against the same cascade in one process: Ray's overhead and the members' numbers.

    python scripts/bench_family_ray.py --seeds 0 1 --cache DIR --out benchmarks

Per seed, from the seed's dense model (``bench_front.train_dense``, the front's CPU protocol): the cascade run in this
process (``train()`` of each member from the previous one, the settings a family member gets: the fine-tune
preset) and ``run_family`` with the same settings (Ray Tune trials, MLflow runs, one member at a time). Reported:
wall time of each (Ray's start, its trial actors and MLflow recording are in the family's; nothing but training and
evaluation in the in-process cascade, so the ratio is an upper bound of Ray's overhead), the members' training
seconds, and whether every member's val and test accuracy are equal to the last digit.
"""

from __future__ import annotations

import argparse
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


def markdown(data: dict) -> str:
    rows, ratios = [], []
    for run in data["runs"]:
        here, ray = run["in_process"], run["ray"]
        ratio = ray["wall_seconds"] / here["wall_seconds"]
        ratios.append(ratio)
        equal = all((a["val_acc"], a["test_acc"]) == (b["val_acc"], b["test_acc"])
                    for a, b in zip(here["members"], ray["members"]))
        rows.append([str(run["seed"]), f"{here['wall_seconds']:.1f}", f"{ray['wall_seconds']:.1f}", f"{ratio:.3f}",
                     f"{sum(m['train_seconds'] for m in here['members']):.1f}",
                     f"{sum(m['train_seconds'] for m in ray['members']):.1f}",
                     "yes" if equal else "no", " / ".join(f"{m['test_acc']:.4f}" for m in ray["members"])])
    mean, half = interval(ratios)
    lines = [
        "# The family on Ray Tune against the same cascade in one process", "",
        f"Protocol: {data['protocol']}; levels {data['levels']}; fine-tune preset; machine: {data['machine']}.",
        f"Command: `{' '.join(data['argv'])}`", "",
        "Wall seconds from the dense model to the last member. The in-process cascade only trains and evaluates; the "
        "family on Ray also starts Ray and its trial actor, records every member in MLflow (files, the mlflow.pytorch "
        "model) and ranks the front, so the ratio bounds Ray's overhead from above.", "",
        *md_table(["seed", "in process, s", "on Ray, s", "ratio", "training s (in process)", "training s (Ray)",
                   "accuracies equal", "members' test acc (Ray)"], rows), "",
        f"Ratio on Ray / in process: {mean:.3f}" + (f" ± {half:.3f} (95% t-interval)" if half is not None else "")
        + f" over seeds {[run['seed'] for run in data['runs']]}; target ≤ 1.1.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--cache", type=Path, help="keep the dense models here between runs (default: not kept)")
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
    data = {"argv": recorded_argv(sys.argv if argv is None else ["scripts/bench_family_ray.py", *argv]),
            "machine": machine_name(machine_info()), "protocol": base, "levels": levels, "runs": runs}
    write_report(args.out, "family_ray", data, markdown(data), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
