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
import json
import math
import pathlib
import shutil
import time

import torch

from chex_tune.config import RunConfig
from chex_tune.train import metrics as m
from chex_tune.train.artifacts import FILES, METRICS, RUN_CONFIG, is_complete, read_metrics
from chex_tune.train.checkpoint import FILENAME
from chex_tune.train.loop import train
from chex_tune.train.weights import check_init, fit_to_weights, space_flag
from chex_tune.tuning.protocol import FINAL_KEY, FIXED_KEY, PARAMS_KEY, SEARCHED_KEY, THREADS_KEY, settings_in
from chex_tune.tuning.reporter import trial_location
from chex_tune.tuning.settings import resolve
from chex_tune.tuning.workers import Workers, rank_directory, report, run_on_workers, world_rank

ARTIFACTS = (*FILES, RUN_CONFIG)
TRIAL_KEY = "trial"  # in a trial's metrics.json: its whole time and where it ran
FINAL_METRICS = (m.VAL_ACC, m.VAL_ACC_MASKED, m.TEST_ACC, m.MACS, m.DENSE_MACS, m.PARAMS, m.DENSE_PARAMS, m.LATENCY_MS,
                 m.MACS_RATIO, m.TRAIN_SECONDS, "epochs")


def builtin_constants(space, *, epochs: int | None, device: str, threads: int, init: str | None = None,
                      workers: int = 1) -> dict:
    """What every built-in trial gets besides Optuna's suggestions; the space's centre is checked first, and a
    trained start (``init``, a local file) every trial forks from is built once here, so weights that do not fit
    stop the sweep before any trial."""
    fixed = dict(space.fixed)
    if epochs is not None:
        fixed["epochs"] = epochs
    if init is not None:
        fixed["init"] = init
    fixed["device"] = device
    if workers != 1:
        fixed["workers_per_trial"] = workers
    if fixed.get("data_dir"):  # trials run in their own directories
        fixed["data_dir"] = str(pathlib.Path(fixed["data_dir"]).expanduser().resolve())
    if init is not None:  # input channels and stem from the weights, where the space leaves them out
        fixed = fit_to_weights(fixed, init, explicit=[*space.fixed, *space.searched], flag=space_flag)
    centre = space.run_config(space.midpoint(), **fixed)  # fail early
    if centre.train.init is not None:
        check_init(centre)
    return {FIXED_KEY: fixed, SEARCHED_KEY: list(space.searched), THREADS_KEY: max(1, int(threads))}


def run_trial(config: dict) -> None:
    from ray import tune

    started = time.perf_counter()
    if config.get(THREADS_KEY):
        torch.set_num_threads(int(config[THREADS_KEY]))
    out = pathlib.Path(tune.get_context().get_trial_dir()) / "run"
    if out.exists():  # a trial restarted after an interruption starts over (a multi-worker one: from its state)
        shutil.rmtree(out)
    artifacts = out / "artifacts"
    if report_again(tune.get_checkpoint(), artifacts):
        return
    run = RunConfig.from_dict(resolve(settings_in(config)))
    if run.train.workers_per_trial > 1:
        run_on_workers(train_worker, config, Workers.of_trial(config), artifacts)
        result = read_metrics(artifacts)  # rank 0's, with where it ran
    else:
        result = train(run, out, callback=report)
        artifacts.mkdir()
        _keep_artifacts(out, artifacts)
        (out / FILENAME).unlink(missing_ok=True)  # a trial's resume state; the sweep keeps only results
        result[TRIAL_KEY] = {"location": trial_location()}
    # everything in the trial (data, training, eval) and where it ran, kept with the result: reporting it
    # again after an interruption repeats them too
    result[TRIAL_KEY]["seconds"] = time.perf_counter() - started
    final = final_report(result)
    if not all(math.isfinite(v) for v in final.values() if isinstance(v, float)):
        raise FloatingPointError(f"non-finite final metrics: {final}")
    (artifacts / METRICS).write_text(json.dumps(result, indent=1))
    tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(artifacts)))


def train_worker(config: dict) -> None:
    """One rank of a multi-worker trial (inside Ray Train): the built-in loop on this rank's slice of each batch.

    Rank 0 reports its resume state every epoch as Ray Train's checkpoint and its files at the end; a rank that
    starts with a checkpoint (a restarted worker group, or a trial restarted by ``--resume``) continues from it."""
    import ray.train

    torch.set_num_threads(max(1, int(Workers.of_trial(config).cpus)))
    run = RunConfig.from_dict(resolve(settings_in(config)))
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
        if not main:
            report({FINAL_KEY: True})
            return
        artifacts = out / "artifacts"
        artifacts.mkdir()
        _keep_artifacts(out, artifacts)
        (artifacts / METRICS).write_text(json.dumps({**result, TRIAL_KEY: {"location": trial_location()}}, indent=1))
        report({FINAL_KEY: True}, artifacts)


def _restore(checkpoint, out: pathlib.Path) -> bool:
    """Put a reported resume state where the loop resumes from; False when there is none (a fresh start)."""
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as state:
        if not (pathlib.Path(state) / FILENAME).exists():
            return False
        shutil.copy2(pathlib.Path(state) / FILENAME, out / FILENAME)
    return True


def _keep_artifacts(out: pathlib.Path, artifacts: pathlib.Path) -> None:
    for name in ARTIFACTS:
        shutil.copy2(out / name, artifacts / name)


def final_report(result: dict) -> dict:
    """A finished trial's last report to Ray, from its ``metrics.json``: the final metrics and its params."""
    final = {k: result[k] for k in FINAL_METRICS}
    latency = result["latency"]
    final.update({m.EPOCH: result["epochs"]}, latency_batch_size=latency["batch_size"],
                 latency_threads=latency["threads"], trial_seconds=result[TRIAL_KEY]["seconds"],
                 latency_iqr_ms=latency["iqr_ms"], latency_spread=latency["spread"])  # is a latency gap noise?
    if m.LATENCY_MEASURED_MS in result:  # a latency table's run: the finished model timed in the table's runtime
        final.update({m.LATENCY_MEASURED_MS: result[m.LATENCY_MEASURED_MS],
                      "latency_width_multiple": latency["width_multiple"]})
    params = {"stem_used": result["stem"], "latency_device": latency["device"], **result[TRIAL_KEY]["location"]}
    return {**final, FINAL_KEY: True, PARAMS_KEY: params}


def report_again(checkpoint, artifacts: pathlib.Path) -> bool:
    """Report a finished trial's epochs and result again, from its checkpoint, instead of training it again.

    Only a final report carries a checkpoint, so a trial that starts with one had finished when its sweep was
    interrupted, before Ray recorded its return (Ctrl-C or a killed driver in between); ``--resume`` restarts
    it from that checkpoint. Returns False (train) for a checkpoint this trainable did not write.
    """
    if checkpoint is None:
        return False
    from ray import tune

    with checkpoint.as_directory() as finished:
        result = read_metrics(finished)
        if TRIAL_KEY not in result or not is_complete(finished) or not all(
                (pathlib.Path(finished) / name).exists() for name in ARTIFACTS):
            return False
        shutil.copytree(finished, artifacts)
    for epoch in result["history"]:
        tune.report(dict(epoch))
    tune.report(final_report(result), checkpoint=tune.Checkpoint.from_directory(str(artifacts)))
    return True
