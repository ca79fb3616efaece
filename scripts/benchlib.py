"""Shared helpers of the benchmark scripts (scripts only; the package never imports this).

Each script keeps its own protocol; what they have in common lives here: the machine and the command a result
records, the statistics (mean, 95% t-interval, paired differences), Markdown tables, and writing a result's
JSON and Markdown (and plot) under the output folder.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path

DISTRIBUTIONS = ("torch", "timm", "torch-pruning", "chex-tune", "numpy", "optuna", "ray", "mlflow")


# ------------------------------------------------------------------------------------ running
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_record(result) -> dict:
    """A finished run's ``RunResult`` as the dict the benchmarks keep: its metrics.json values and its history."""
    return {**result.record(), "history": list(result.history)}


def median(values):
    return statistics.median(values)


def timestamp() -> str:
    """Now, local time with its UTC offset, to the second: when a result was made."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


FOLDER_OPTIONS = ("--out", "--cache", "--before")  # folders a benchmark names, recorded as DIR when outside the project


def recorded_argv(argv: list[str]) -> list[str]:
    """A benchmark's arguments as its results record them: a folder it writes outside the project (an absolute
    path, a scratch folder of this machine) reads ``DIR``, so recorded commands name no machine's paths."""
    recorded = list(argv)
    for n, arg in enumerate(recorded):
        option, equals, value = arg.partition("=")
        if option not in FOLDER_OPTIONS:
            continue
        if equals and Path(value).is_absolute():
            recorded[n] = f"{option}=DIR"
        elif not equals and n + 1 < len(recorded) and Path(recorded[n + 1]).is_absolute():
            recorded[n + 1] = "DIR"
    return recorded


def script_command(script: str, argv: Sequence[str]) -> str:
    """``python scripts/<script> <argv>`` as a shell line: how a report says to reproduce it."""
    return shlex.join(["python", f"scripts/{script}", *argv])


def recorded_command() -> tuple[str, list[str]]:
    """This process's command as its results record it: the shell line (``python scripts/x.py ...``) and the
    script with its arguments, an output folder outside the project reading ``DIR``."""
    recorded = [sys.argv[0], *recorded_argv(sys.argv[1:])]
    return shlex.join([Path(sys.executable).name, *recorded]), recorded


# ------------------------------------------------------------------------------------ the machine
def _proc_line(path: str, prefix: str) -> str | None:
    """The first line of ``path`` (a /proc file) that starts with ``prefix``; None when there is none."""
    try:
        return next((line for line in Path(path).read_text().splitlines() if line.startswith(prefix)), None)
    except OSError:
        return None


def package_versions(names: Iterable[tuple[str, str]]) -> dict:
    """{key: installed version of the distribution, or None} for (key, distribution name) pairs."""
    versions = {}
    for key, dist in names:
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def machine_info() -> dict:
    """CPU/GPU model, cores, memory, library versions: what a reader needs to compare numbers."""
    import torch  # here, not above: a script that never asks (coverage.py's parent) starts without it

    cpu = _proc_line("/proc/cpuinfo", "model name")
    memory = _proc_line("/proc/meminfo", "MemTotal:")
    versions = package_versions((dist, dist) for dist in DISTRIBUTIONS)
    versions["python"] = platform.python_version()
    return {"cpu_model": cpu.split(":", 1)[1].strip() if cpu else "unknown", "nproc": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_total_gib": round(int(memory.split()[1]) / 2**20, 1) if memory else None,
            "platform": platform.platform(), "versions": versions,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_name(info: dict) -> str:
    """The machine as a report names it: its GPU, else its CPU model."""
    return info["gpu"] or info["cpu_model"]


def cpu_line(info: dict) -> str:
    """``<CPU model>, <N> cores``: the machine line of a report's header."""
    return f"{info['cpu_model']}, {info['nproc']} cores"


# ------------------------------------------------------------------------------------ statistics
# Student's t 0.975 quantile by degrees of freedom; beyond 30 the normal quantile is within 4%.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042}


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None with one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None
    return mean, T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], float, float | None]:
    """a − b, pair by pair (the same seeds, in the same order): the differences, their mean and the half-width
    of its 95% t-interval."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, half = interval(diffs)
    return diffs, mean, half


def verdict(ok: bool, miss_by: str = "") -> str:
    return "PASS" if ok else f"MISS{f' by {miss_by}' if miss_by else ''}"


# ------------------------------------------------------------------------------------ reports
def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the header, its rule, then one line per row of cells (already formatted)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def notes(path: Path) -> str | None:
    """The hand-written notes kept beside the reports (``path``), or None where there are none."""
    return path.read_text() if path.exists() else None


def pyplot():
    """matplotlib.pyplot drawing to files (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


Plot = tuple[str, Callable[[Path], None]]  # a figure's file name and the function that draws it there


def write_report(out: Path, name: str, data: dict, markdown: str, *, plot: Plot | None = None, indent: int = 1,
                 final_newline: bool = True, echo: bool = False) -> None:
    """A result's files under ``out``: ``<name>.json`` (``data``), ``<name>.md`` (``markdown``) and, with ``plot``
    (file name, drawing function), a figure; ``echo`` prints the Markdown too. ``indent`` and ``final_newline``
    keep each benchmark's JSON as it has always been written, so a rewritten report is byte for byte the same."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=indent) + ("\n" if final_newline else ""))
    if plot is not None:
        filename, draw = plot
        draw(out / filename)
    (out / f"{name}.md").write_text(markdown)
    if echo:
        print(markdown, end="")
