#!/usr/bin/env python
"""Does a 2-worker CHEX run train the network a 1-worker run trains? Equivalence and throughput of data-parallel runs.

Not part of the package (nothing imports it). Protocol: the main job's (resnet18, Fashion-MNIST at 28 px, timm stem,
3 epochs on a class-balanced 2,500 images, global batch 128, lr 0.1) with one set of CHEX settings (macs_target
0.25, regrow_ratio 0.1, explore_until 0.3, period 2 steps). Per seed, three arms on this machine's cores:

- ``1 worker``: one process, batch 128, all cores as torch threads;
- ``2 workers, sync_bn``: two gloo ranks (one thread each), 64 images each per step, BatchNorm over the global batch;
- ``2 workers``: the same with each rank's BatchNorm on its own 64 images (the DDP default);
- ``1 worker, 1 thread``: the control: the 1-worker run's arithmetic in another summation order (one thread).

Equivalence (issue 27): with synchronised BatchNorm a 2-worker run takes the steps the 1-worker run takes on the same
global batches (DDP averages the gradients of the two halves), so it should reach the same final widths at the same
seed; the difference left is floating-point summation order, which from-scratch training at this learning rate
amplifies: the control arm shows how far summation order alone moves a run. Reported per arm against ``1 worker``:
seeds with every
group's width equal, the largest width difference, the final train loss's relative difference and the accuracy
difference (mean and 95% interval over seeds), and the training throughput (images/s, side by side on this machine).

    python scripts/bench_workers.py --out benchmarks           # the report (4 seeds)
    python scripts/bench_workers.py --seeds 0 --out /tmp/w     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import chex_tune  # noqa: F401  (before timm: fixes the torchvision import)

# isort: split
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import cpu_line, interval, log, machine_info, md_table, recorded_command, verdict, write_report  # noqa: E402

from chex_tune.config import RunConfig  # noqa: E402
from chex_tune.train.loop import train  # noqa: E402

SETTINGS = {"model": "resnet18", "dataset": "fashion-mnist", "stem": "timm", "epochs": 3, "train_subset": 2500,
            "val_size": 1000, "batch_size": 128, "lr": 0.1, "macs_target": 0.25, "regrow_ratio": 0.1,
            "explore_until": 0.3, "period": 2, "unit": "step", "device": "cpu"}
# arm: (workers, sync_bn, torch threads per worker); 0 threads = all cores
ARMS = {"1 worker": (1, False, 0), "1 worker, 1 thread": (1, False, 1), "2 workers, sync_bn": (2, True, 1),
        "2 workers": (2, False, 1)}


def summary(result: dict, out: Path, seconds: float) -> dict:
    widths = json.loads((out / "widths.json").read_text())
    rows = widths["groups"] if isinstance(widths, dict) else widths
    return {"widths": [row["width"] for row in rows], "val_acc": result.val_acc, "test_acc": result.test_acc,
            "train_loss": result.history[-1]["train_loss"], "macs": result.macs, "seconds": seconds,
            "train_seconds": result.train_seconds, "train_size": result.train_size,
            "distributed": result.distributed, "mask_digests": [row[0] for row in result.mask_digests]}


def _rank(rank: int, port: int, settings: dict, out: str, threads: int) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        started = time.perf_counter()
        result = train(RunConfig.from_dict(settings), Path(out) / f"rank{rank}")
        if rank == 0:
            record = summary(result, Path(out) / "rank0", time.perf_counter() - started)
            (Path(out) / "summary.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def run_arm(workers: int, sync_bn: bool, threads: int, seed: int) -> dict:
    settings = {**SETTINGS, "seed": seed, "sync_bn": sync_bn}
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:
        if workers == 1:
            torch.set_num_threads(threads)
            started = time.perf_counter()
            result = train(RunConfig.from_dict(settings), out)
            return summary(result, Path(out), time.perf_counter() - started)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_rank, args=(port, settings, out, threads), nprocs=workers, join=True)
        return json.loads((Path(out) / "summary.json").read_text())


def compare(runs: dict, seeds: list[int]) -> dict:
    base = runs["1 worker"]
    rows = {}
    for arm in ARMS:
        per_seed = [(runs[arm][str(s)], base[str(s)]) for s in seeds]
        width_gaps = [max(abs(a - b) for a, b in zip(r["widths"], b0["widths"], strict=True)) for r, b0 in per_seed]
        loss_gaps = [abs(r["train_loss"] - b0["train_loss"]) / b0["train_loss"] for r, b0 in per_seed]
        rows[arm] = {
            "seeds_equal_widths": sum(gap == 0 for gap in width_gaps), "largest_width_gap": max(width_gaps),
            "groups_differing": [sum(a != b for a, b in zip(r["widths"], b0["widths"])) for r, b0 in per_seed],
            "largest_loss_gap": max(loss_gaps),
            # prune-regrow steps (the first prune included) that chose the base run's channels, before one did not
            "same_masks_first": [next((i for i, (a, b) in enumerate(zip(r["mask_digests"], b0["mask_digests"]))
                                       if a != b), len(b0["mask_digests"])) for r, b0 in per_seed],
            "mask_steps": len(base[str(seeds[0])]["mask_digests"]),
            "test_acc_diff": interval([100 * (r["test_acc"] - b0["test_acc"]) for r, b0 in per_seed]),
            "images_per_s": interval([r["train_size"] * SETTINGS["epochs"] / r["train_seconds"]
                                      for r, _ in per_seed]),
        }
    return rows


def markdown(data: dict) -> str:
    rows = data["comparison"]
    seeds = len(data["seeds"])
    lines = ["# Data-parallel CHEX runs: 2 workers against 1 (`scripts/bench_workers.py`)\n",
             f"Machine: {cpu_line(data['machine'])}; `{data['command']}`\n",
             f"Protocol: {json.dumps(SETTINGS)}; seeds {data['seeds']}. Widths: every channel group's final width "
             "compared with the 1-worker run of the same seed; steps with the same masks: how many of the run's "
             "mask choices (the first prune, then each prune-regrow step) chose exactly the 1-worker run's channels "
             "before the first that did not, per seed.\n"]
    lines += md_table(["arm", f"seeds with equal widths (of {seeds})", "largest width gap", "groups differing",
                       f"steps with the same masks, of {rows['1 worker']['mask_steps']}",
                       "largest train-loss gap", "test acc − 1 worker (pt)", "train images/s"],
                      [[arm, str(r["seeds_equal_widths"]), str(r["largest_width_gap"]),
                        ", ".join(map(str, r["groups_differing"])), ", ".join(map(str, r["same_masks_first"])),
                        f"{100 * r['largest_loss_gap']:.4f}%",
                        f"{r['test_acc_diff'][0]:+.2f} ± {r['test_acc_diff'][1] or 0:.2f}",
                        f"{r['images_per_s'][0]:.0f}"] for arm, r in rows.items()])
    synced, control = rows["2 workers, sync_bn"], rows["1 worker, 1 thread"]
    missed = f"{seeds - synced['seeds_equal_widths']} seeds"
    lines += ["", "| target | measured | verdict |", "|---|---|---|",
              f"| 2 workers with sync_bn reach the 1-worker run's final widths at the same seed | "
              f"{synced['seeds_equal_widths']} of {seeds} seeds (largest gap {synced['largest_width_gap']} channels "
              f"in a group) | {verdict(synced['seeds_equal_widths'] == seeds, missed)} |",
              f"| ... no further from it than summation order alone moves a run (the 1-thread control) | "
              f"groups differing {sum(synced['groups_differing'])} vs {sum(control['groups_differing'])}, "
              f"largest train-loss gap {100 * synced['largest_loss_gap']:.2f}% vs "
              f"{100 * control['largest_loss_gap']:.2f}% "
              f"| {verdict(sum(synced['groups_differing']) <= 1.5 * sum(control['groups_differing']))} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = {arm: {} for arm in ARMS}
    for seed in args.seeds:
        for arm, (workers, sync_bn, threads) in ARMS.items():
            runs[arm][str(seed)] = run_arm(workers, sync_bn, threads, seed)
            r = runs[arm][str(seed)]
            log(f"seed {seed} {arm}: widths {sum(r['widths'])} channels, test {r['test_acc']:.4f}, "
                f"loss {r['train_loss']:.5f}, {r['train_seconds']:.1f} s")
    data = {"command": recorded_command()[0], "machine": machine_info(), "seeds": args.seeds, "settings": SETTINGS,
            "runs": runs, "comparison": compare(runs, args.seeds)}
    write_report(args.out, "workers", data, markdown(data), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
