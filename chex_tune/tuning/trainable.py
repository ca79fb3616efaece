"""The built-in trainable: one trial = one ``chex_tune.train`` run (a timm model on a built-in dataset).

It is one trainable among others: ``run_sweep`` runs it exactly as it runs a user's own. A trial's
config holds the sampled parameters at the top level (as OptunaSearch suggests them) plus three
constants: ``chex_fixed`` (every other RunConfig setting), ``chex_searched`` (the names Optuna samples)
and ``chex_threads`` (torch threads for this trial's CPU share).

The trial never talks to MLflow: it reports metrics to Ray every epoch, and its final report (marked
``chex_final``, like ChexReporter's) carries a checkpoint directory with the compact model and its
files. The driver is MLflow's only writer (track/recorder.py). A trial that ``--resume`` restarts from that
checkpoint had already finished: it reports its epochs and result again rather than training again.
"""

from __future__ import annotations

import chex_tune  # noqa: F401  (first in every Ray worker: makes `import timm` work; registers builders)

# isort: split
import pathlib
import shutil
import time

import torch

from chex_tune.config import PRESETS, RunConfig, start_preset
from chex_tune.train.artifacts import FILES, RUN_CONFIG
from chex_tune.train.checkpoint import FILENAME
from chex_tune.train.loop import train
from chex_tune.train.result import RunResult
from chex_tune.train.weights import check_init, fit_to_weights, space_flag
from chex_tune.tuning.finish import TrialEnd, finish_trial, replay_finished
from chex_tune.tuning.options import Workers
from chex_tune.tuning.protocol import FIXED_KEY, SEARCHED_KEY, THREADS_KEY
from chex_tune.tuning.session import in_train_worker, report, trial_location, world_rank
from chex_tune.tuning.settings import run_settings
from chex_tune.tuning.workers import rank_directory

ARTIFACTS = (*FILES, RUN_CONFIG)


def builtin_constants(space, overrides: dict, *, device: str, threads: int, init: str | None = None) -> dict:
    """What every built-in trial gets besides Optuna's suggestions: the space's fixed settings with the sweep's
    ``overrides`` (epochs, workers_per_trial); the space's centre is checked first, and a trained start (``init``, a
    local file) every trial forks from is built once here, so weights that do not fit stop the sweep before any
    trial."""
    fixed = {**space.fixed, **overrides, "device": device}
    if init is not None:
        fixed["init"] = init
    preset = start_preset(fixed)  # a trained start's trials are fine-tunes: the preset's values, stated in every trial
    fixed = {**(PRESETS[preset] if preset else {}), **fixed}
    if fixed.get("data_dir"):  # trials run in their own directories
        fixed["data_dir"] = str(pathlib.Path(fixed["data_dir"]).expanduser().resolve())
    if init is not None:  # input channels and stem from the weights, where the space leaves them out
        fixed = fit_to_weights(fixed, init, explicit=[*space.fixed, *space.searched], flag=space_flag)
    centre = space.run_config(space.midpoint(), **fixed)  # fail early
    if centre.train.init is not None:
        check_init(centre)
    return {FIXED_KEY: fixed, SEARCHED_KEY: list(space.searched), THREADS_KEY: max(1, int(threads))}


def run_trial(config: dict) -> None:
    """The built-in trial: one ``chex_tune.train`` run in this Tune trial, or on one rank of a multi-worker trial
    (the sweep runs it through ``on_workers``, as it runs a user's trainable; rank 0's end is the trial's)."""
    started = time.perf_counter()
    if in_train_worker():
        _run_rank(config, started)
        return
    from ray import tune

    if config.get(THREADS_KEY):
        torch.set_num_threads(int(config[THREADS_KEY]))
    out = pathlib.Path(tune.get_context().get_trial_dir()) / "run"
    if out.exists():  # a trial restarted after an interruption starts over
        shutil.rmtree(out)
    files = out / "artifacts"
    if replay_finished(tune.get_checkpoint(), files):
        return
    result = train(trial_run_config(config), out, callback=report)
    _finish(result, out, started)


def trial_run_config(config: dict) -> RunConfig:
    """The trial's run (``settings.run_settings``: its parent's compact model as the start where it has one)."""
    return RunConfig.from_dict(run_settings(config))


def _run_rank(config: dict, started: float) -> None:
    """One rank of a multi-worker trial (inside Ray Train): the built-in loop on this rank's slice of each batch.

    Rank 0 reports its resume state every epoch as Ray Train's checkpoint and its files at the end; a rank that
    starts with a checkpoint (a restarted worker group, or a trial restarted by ``--resume``) continues from it."""
    import ray.train

    torch.set_num_threads(max(1, int(Workers.of_trial(config).cpus)))
    run = trial_run_config(config)
    main = world_rank() == 0
    with rank_directory("chex-trial") as out:
        resume = _restore(ray.train.get_checkpoint(), out)
        state = out / "state"

        def report_epoch(metrics: dict) -> None:
            if main:
                state.mkdir(exist_ok=True)
                shutil.copy2(out / FILENAME, state / FILENAME)
            report(metrics, state if main else None)

        result = train(run, out, callback=report_epoch, resume=resume)
        if main:
            _finish(result, out, started)
        else:
            finish_trial(TrialEnd({}))  # the other ranks' ends carry nothing: rank 0's is the trial's


def _finish(result: RunResult, out: pathlib.Path, started: float) -> None:
    """The trial's files (the run's, less its resume state) and its one final report, with the trial's whole time
    (data, training, eval) and where it ran."""
    files = out / "artifacts"
    files.mkdir()
    for name in ARTIFACTS:
        shutil.copy2(out / name, files / name)
    (out / FILENAME).unlink(missing_ok=True)
    finish_trial(TrialEnd.of_run(result, files, seconds=time.perf_counter() - started, location=trial_location()))


def _restore(checkpoint, out: pathlib.Path) -> bool:
    """Put a reported resume state where the loop resumes from; False when there is none (a fresh start)."""
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as state:
        if not (pathlib.Path(state) / FILENAME).exists():
            return False
        shutil.copy2(pathlib.Path(state) / FILENAME, out / FILENAME)
    return True
