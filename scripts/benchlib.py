"""Shared helpers of the benchmark scripts (scripts only; the package never imports this)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import torch


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(values):
    return statistics.median(values)


def recorded_argv(argv: list[str]) -> list[str]:
    """A benchmark's arguments as its results record them: an output folder outside the project (an absolute
    path, a scratch folder of this machine) reads ``DIR``, so recorded commands name no machine's paths."""
    recorded = list(argv)
    for n, arg in enumerate(recorded):
        if arg == "--out" and n + 1 < len(recorded) and Path(recorded[n + 1]).is_absolute():
            recorded[n + 1] = "DIR"
        elif arg.startswith("--out=") and Path(arg.removeprefix("--out=")).is_absolute():
            recorded[n] = "--out=DIR"
    return recorded


def machine_info() -> dict:
    """CPU/GPU model, cores, memory, library versions: what a reader needs to compare numbers."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for dist in ["torch", "timm", "torch-pruning", "chex-tune", "numpy", "optuna", "ray", "mlflow"]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["python"] = platform.python_version()
    return {"cpu_model": cpu_model, "nproc": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_total_gib": mem_total_gib, "platform": platform.platform(), "versions": versions,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def verdict(ok: bool, miss_by: str = "") -> str:
    return "PASS" if ok else f"MISS{f' by {miss_by}' if miss_by else ''}"
