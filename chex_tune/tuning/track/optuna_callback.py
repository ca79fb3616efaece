"""An Optuna callback that records every trial of a study in MLflow (see track/recorder.py for what a run holds).

    with OptunaMlflowCallback("my-sweep", objectives="val_acc:max,macs:min") as record:
        study.optimize(objective, n_trials=20, callbacks=[record])     # objective trains with ChexReporter(trial=trial)
    # leaving the block ranks the trials, tags the Pareto front and finishes the sweep's parent run

Optuna calls it in the study's process after each trial, so MLflow has one writer. A trial's run gets
its parameters (yours and the resolved CHEX settings), the per-epoch metrics and final metrics its
``ChexReporter`` reported, the values the objective returned (under the objectives' names) and the
compact model with its files; a trial whose objective raised is a FAILED run, one stopped early by
the study (Optuna's "pruned") a KILLED run tagged ``chex.stopped_at_epoch``. No Ray.
"""

from __future__ import annotations

import logging
import pathlib
import shutil

from chex_tune.train.artifacts import read_history
from chex_tune.train.metrics import EPOCH
from chex_tune.tuning.objectives import parse_objectives
from chex_tune.tuning.protocol import OPTUNA_ATTR, STOPPED_TAG
from chex_tune.tuning.track.recorder import SweepRecorder
from chex_tune.tuning.track.store import default_store_uri

logger = logging.getLogger(__name__)


class OptunaMlflowCallback:
    """``study.optimize(..., callbacks=[OptunaMlflowCallback(experiment, objectives=...)])``; ``close()`` at the end.

    tracking_uri: default MLFLOW_TRACKING_URI, else ``./mlflow/mlflow.db`` (where ``chex-tune pareto`` looks);
    objectives: one per value the objective returns, in order, with the study's directions.
    """

    def __init__(self, experiment: str, *, objectives, tracking_uri: str | None = None, sweep: str | None = None):
        self.objectives = parse_objectives(objectives)
        self.recorder = SweepRecorder(default_store_uri(tracking_uri), experiment, sweep=sweep,
                                      objectives=self.objectives)
        self._checked = False

    @property
    def tracking_uri(self) -> str:
        return self.recorder.tracking_uri

    def _check_study(self, study) -> None:
        directions = [d.name.lower() for d in study.directions]
        wanted = [o.direction for o in self.objectives]
        if directions != wanted:
            raise ValueError(f"objectives {', '.join(map(str, self.objectives))} want directions {wanted}, but study "
                             f"{study.study_name!r} has {directions}; give one objective per returned value, in order")
        self._checked = True

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        if not self._checked:
            self._check_study(study)
        self.recorder.open(tags={"chex.study": study.study_name})
        info = dict(trial.user_attrs.get(OPTUNA_ATTR) or {})
        key = str(trial.number)
        self.recorder.start_trial(key, {**trial.params, **info.get("settings", {})}, sorted(trial.params))
        directory = pathlib.Path(info["artifacts"]) if info.get("artifacts") else None
        try:
            if trial.state == TrialState.COMPLETE:
                final = dict(info.get("metrics") or {})
                final.update({o.name: value for o, value in zip(self.objectives, trial.values or ())})
                self.recorder.complete_trial(key, final, directory, params=info.get("params"),
                                             history=read_history(directory))
            elif trial.state == TrialState.PRUNED:
                run_id = self.recorder.run_id(key)
                for entry in read_history(directory):
                    self.recorder.log_epoch(key, entry, step=int(entry.get(EPOCH, 0)))
                epoch = max(trial.intermediate_values, default=0)  # the last step it reported before the stop
                self.recorder.client.set_tag(run_id, STOPPED_TAG, str(epoch))
                self.recorder.client.set_terminated(run_id, "KILLED")
            else:
                self.recorder.fail_trial(key, f"trial {trial.number} ended {trial.state.name}: its objective raised "
                                              "(the exception is in Optuna's log)")
        finally:
            if directory is not None and info.get("temporary"):
                shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> list:
        """Rank the recorded trials, tag the Pareto front and finish the sweep's parent run; returns the rows."""
        if self.recorder.parent_run_id is None:
            return []
        return self.recorder.close()

    def __enter__(self) -> OptunaMlflowCallback:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.recorder.parent_run_id is not None:
            self.recorder.close("FINISHED" if kind is None else "FAILED")
