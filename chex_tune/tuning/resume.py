"""Continuing an interrupted sweep, and leaving none of its records half-done.

``--resume`` continues the experiment's latest sweep from Ray's saved state (finished trials are not run
again) under the same MLflow parent run and Optuna study. Whether a sweep ended normally, was interrupted
(Ctrl-C, a killed driver) or was resumed, its end goes through ``settle_runs`` (no run stays RUNNING) and,
once complete, ``retire_orphans`` (attempts that Ray's saved state lost, in MLflow and in Optuna).
"""

from __future__ import annotations

import logging
import pathlib

from chex_tune.tuning.protocol import FINAL_KEY, PARENT_TAG, ROLE_TAG, SWEEP_TAG, TrialRow
from chex_tune.tuning.track.recorder import SweepRecorder

logger = logging.getLogger(__name__)


def find_sweep_to_resume(recorder: SweepRecorder, ray_root: pathlib.Path) -> None:
    """Point ``recorder`` at the experiment's most recent sweep that Ray can restore, and its parent run."""
    from ray import tune

    experiment = recorder.client.get_experiment_by_name(recorder.experiment)
    if experiment is None:
        raise ValueError(f"--resume: no experiment {recorder.experiment!r} in {recorder.tracking_uri}")
    recorder.experiment_id = experiment.experiment_id
    parents = recorder.client.search_runs([experiment.experiment_id],
                                          filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                          order_by=["attributes.start_time DESC"])
    for parent in parents:
        sweep = parent.data.tags.get(SWEEP_TAG, "")
        if sweep and tune.Tuner.can_restore(str(ray_root / sweep)):
            recorder.sweep, recorder.parent_run_id = sweep, parent.info.run_id
            return
    raise ValueError(f"--resume: no sweep of experiment {recorder.experiment!r} to resume under {ray_root} "
                     "(start one without --resume)")


def restore_tuner(recorder: SweepRecorder, ray_root: pathlib.Path, trainable):
    """Ray's saved sweep, to continue: unfinished trials run again, finished ones do not."""
    from ray import tune

    recorder.client.update_run(recorder.parent_run_id, status="RUNNING")
    return tune.Tuner.restore(str(ray_root / recorder.sweep), trainable, resume_unfinished=True,
                              resume_errored=False, restart_errored=False)


def settle_runs(recorder: SweepRecorder, grid) -> None:
    """No child run of the sweep stays RUNNING once ``fit`` returns.

    A trial Ray saw finish, whose run the MLflow writer never closed (the driver was killed in between, and
    this is the resume), is completed from Ray's record of it: its last report and its files. A run whose
    trial did not end (Ctrl-C, or a killed driver) is KILLED; ``--resume`` runs that trial again in a new run.
    That includes a trial whose final report arrived but whose return Ray had not seen when Ctrl-C came
    (no ``done``): Ray's saved state holds it as running and restarts it, so its run must not say FINISHED.
    (The built-in trainable, restarted from its final checkpoint, reports it again without training.)
    """
    from ray.tune import result as ray_result

    from chex_tune.tuning.track.ray_callback import reported_params, trainable_metrics

    def running(key: str) -> bool:
        run_id = recorder.run_id(key)
        return run_id is not None and recorder.client.get_run(run_id).info.status == "RUNNING"

    for result in grid:
        metrics = result.metrics or {}
        key = metrics.get("trial_id")
        if not key or not running(key):
            continue
        if result.error is not None:
            recorder.fail_trial(key, str(result.error))
        elif metrics.get(FINAL_KEY) and metrics.get(ray_result.DONE) and result.checkpoint is not None:
            recorder.complete_trial(key, trainable_metrics(metrics), pathlib.Path(result.checkpoint.path),
                                    params=reported_params(metrics))
    left = recorder.client.search_runs([recorder.experiment_id], filter_string=(
        f"tags.`{PARENT_TAG}` = '{recorder.parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in left:
        recorder.client.set_terminated(run.info.run_id, "KILLED")


def retire_orphans(recorder: SweepRecorder, rows: list[TrialRow], optuna_storage: str | None) -> list[TrialRow]:
    """A complete sweep's rows without the attempts its saved state lost; those are retired in MLflow and Optuna.

    MLflow: the KILLED runs of trials that Ray's saved state lost (its driver died or the disk filled before Ray
    saved them), whose places new trials took on resume, are soft-deleted and tagged ``chex.orphan`` (without
    this the sweep would show N+1 runs for N trials). Optuna: trials still RUNNING, asked by a driver that was
    killed before Ray saved the searcher's state, are told FAIL (no trial will ever report to them).
    """
    orphans = {row.run_id for row in rows if row.status == "KILLED" and row.stopped_at is None}
    for run_id in orphans:
        recorder.client.set_tag(run_id, "chex.orphan", "true")
        recorder.client.delete_run(run_id)
    if orphans:
        logger.info("%d interrupted trial run(s) that Ray did not resume (new trials took their places) deleted "
                    "from MLflow (restorable: tag chex.orphan)", len(orphans))
    if optuna_storage is not None:  # None: no Optuna study (a family)
        _fail_running_trials(optuna_storage, recorder.sweep)
    return [row for row in rows if row.run_id not in orphans]  # the others' ranks stay as they were


def _fail_running_trials(storage: str, study_name: str) -> int:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if orphans:
        logger.info("Optuna study %s: %d trial(s) left RUNNING by an interrupted driver marked FAIL",
                    study_name, len(orphans))
    return len(orphans)
