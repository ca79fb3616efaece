"""The Ray Tune trainable: one trial = one ``chex_tune.train`` run, reporting every epoch.

A trial's config holds the sampled CHEX parameters at the top level (as OptunaSearch suggests them)
plus three constants the sweep adds: ``chex_fixed`` (every other setting), ``chex_searched`` (the
names Optuna samples) and ``chex_threads`` (torch threads for this trial's CPU share).

The trial never talks to MLflow: it reports metrics to Ray, and its final report carries a checkpoint
directory with the compact model and its files. The driver is MLflow's only writer (see tracking.py).
"""

from __future__ import annotations

import chex_tune  # noqa: F401  (first in every Ray worker: makes `import timm` work; registers builders)

# isort: split
import math
import pathlib
import shutil
import time

import torch

from chex_tune.config import RunConfig
from chex_tune.train.loop import train

ARTIFACTS = ("compact.pt", "metrics.json", "widths.json", "config.yaml")
FINAL_METRICS = ("val_acc", "val_acc_masked", "test_acc", "macs", "dense_macs", "params", "dense_params",
                 "latency_ms", "macs_ratio", "train_seconds", "epochs")
FINAL_REPORT = (*FINAL_METRICS, "trial_seconds", "latency_batch_size", "latency_threads")  # numbers of the last report


def trial_settings(config: dict) -> dict:
    """The flat RunConfig values of a trial: fixed settings, then what Optuna sampled."""
    return {**config["chex_fixed"], **{name: config[name] for name in config["chex_searched"]}}


def run_trial(config: dict) -> None:
    from ray import tune

    started = time.perf_counter()
    if config.get("chex_threads"):
        torch.set_num_threads(int(config["chex_threads"]))
    settings = trial_settings(config)
    run = RunConfig.from_dict(settings)
    out = pathlib.Path(tune.get_context().get_trial_dir()) / "run"
    if out.exists():  # a trial restarted after an interruption trains from scratch
        shutil.rmtree(out)

    def report_epoch(metrics: dict) -> None:
        tune.report({**metrics, "final": False})

    result = train(run, out, callback=report_epoch)
    final = {k: result[k] for k in FINAL_METRICS}
    final.update(epoch=result["epochs"], final=True, stem_used=result["stem"],
                 latency_device=result["latency"]["device"], latency_batch_size=result["latency"]["batch_size"],
                 latency_threads=result["latency"]["threads"])
    if not all(math.isfinite(v) for v in final.values() if isinstance(v, float)):
        raise FloatingPointError(f"non-finite final metrics: {final}")
    artifacts = out / "artifacts"
    artifacts.mkdir()
    for name in ARTIFACTS:
        shutil.copy2(out / name, artifacts / name)
    (out / "checkpoint.pt").unlink(missing_ok=True)  # a trial's resume state; the sweep keeps only results
    final["trial_seconds"] = time.perf_counter() - started  # everything in the trial: data, training, eval
    tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(artifacts)))
