"""The built-in trainable: one trial = one ``chex_tune.train`` run (a timm model on a built-in dataset).

It is one trainable among others: ``run_sweep`` runs it exactly as it runs a user's own. A trial's
config holds the sampled parameters at the top level (as OptunaSearch suggests them) plus three
constants: ``chex_fixed`` (every other RunConfig setting), ``chex_searched`` (the names Optuna samples)
and ``chex_threads`` (torch threads for this trial's CPU share).

The trial never talks to MLflow: it reports metrics to Ray every epoch, and its final report (marked
``chex_final``, like ChexReporter's) carries a checkpoint directory with the compact model and its
files. The driver is MLflow's only writer (see tracking.py).
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
from chex_tune.tuning.chex_space import FIXED_KEY, SEARCHED_KEY
from chex_tune.tuning.reporter import FINAL_KEY, PARAMS_KEY, trial_location

ARTIFACTS = ("compact.pt", "metrics.json", "widths.json", "config.yaml")
FINAL_METRICS = ("val_acc", "val_acc_masked", "test_acc", "macs", "dense_macs", "params", "dense_params",
                 "latency_ms", "macs_ratio", "train_seconds", "epochs")


def trial_settings(config: dict) -> dict:
    """The flat RunConfig values of a trial: fixed settings, then what Optuna sampled."""
    return {**config[FIXED_KEY], **{name: config[name] for name in config[SEARCHED_KEY]}}


def builtin_constants(space, *, epochs: int | None, device: str, threads: int) -> dict:
    """What every built-in trial gets besides Optuna's suggestions; the space's centre is checked first."""
    fixed = dict(space.fixed)
    if epochs is not None:
        fixed["epochs"] = epochs
    fixed["device"] = device
    if fixed.get("data_dir"):  # trials run in their own directories
        fixed["data_dir"] = str(pathlib.Path(fixed["data_dir"]).expanduser().resolve())
    space.run_config({name: param.midpoint() for name, param in space.params.items()}, **fixed)  # fail early
    return {FIXED_KEY: fixed, SEARCHED_KEY: sorted(space.params), "chex_threads": max(1, int(threads))}


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
        tune.report(dict(metrics))

    result = train(run, out, callback=report_epoch)
    final = {k: result[k] for k in FINAL_METRICS}
    latency = result["latency"]
    final.update(epoch=result["epochs"], latency_batch_size=latency["batch_size"], latency_threads=latency["threads"],
                 latency_iqr_ms=latency["iqr_ms"], latency_spread=latency["spread"])  # is a latency gap noise?
    if not all(math.isfinite(v) for v in final.values() if isinstance(v, float)):
        raise FloatingPointError(f"non-finite final metrics: {final}")
    artifacts = out / "artifacts"
    artifacts.mkdir()
    for name in ARTIFACTS:
        shutil.copy2(out / name, artifacts / name)
    (out / "checkpoint.pt").unlink(missing_ok=True)  # a trial's resume state; the sweep keeps only results
    final["trial_seconds"] = time.perf_counter() - started  # everything in the trial: data, training, eval
    params = {"stem_used": result["stem"], "latency_device": result["latency"]["device"], **trial_location()}
    tune.report({**final, FINAL_KEY: True, PARAMS_KEY: params},
                checkpoint=tune.Checkpoint.from_directory(str(artifacts)))
