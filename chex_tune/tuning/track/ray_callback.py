"""A Ray Tune callback that records every trial of a Tuner in MLflow (see track/recorder.py for what a run holds).

    callback = RayMlflowCallback("my-sweep", objectives="val_acc:max,macs:min")
    tuner = tune.Tuner(train_fn, param_space=..., tune_config=..., run_config=tune.RunConfig(callbacks=[callback]))

Ray calls it on the driver's scheduling loop, so every MLflow write goes to one background thread (FIFO,
one connection): logging a compact model never holds up the next trial, and the store has a single
writer. Used on its own it creates the sweep's parent run when the experiment starts and, when it ends,
ranks the trials on ``objectives``, tags the front and finishes the parent run; ``run_sweep`` passes its
own parent run instead.
"""

from __future__ import annotations

import logging
import pathlib
from concurrent.futures import ThreadPoolExecutor

from ray.tune import Callback
from ray.tune import result as ray_result

from chex_tune.core.errors import disk_error
from chex_tune.train.metrics import EPOCH
from chex_tune.tuning.protocol import FINAL_KEY, MEMBER_KEY, MEMBER_TAG, PARAMS_KEY, parent_of, searched_names
from chex_tune.tuning.settings import trial_params
from chex_tune.tuning.track.recorder import SweepRecorder, trial_error_text
from chex_tune.tuning.track.store import default_store_uri

logger = logging.getLogger(__name__)

# What Ray adds to every result: not the trainable's metrics, never logged.
RAY_KEYS = frozenset((*ray_result.AUTO_RESULT_KEYS, *ray_result.DEBUG_METRICS, ray_result.DONE, ray_result.TRIAL_ID,
                      ray_result.EXPERIMENT_TAG, ray_result.TIMESTEPS_THIS_ITER, ray_result.EPISODES_THIS_ITER,
                      ray_result.RESULT_DUPLICATE, ray_result.SHOULD_CHECKPOINT, ray_result.TRIAL_INFO,
                      ray_result.STDOUT_FILE, ray_result.STDERR_FILE, FINAL_KEY, PARAMS_KEY))


def trainable_metrics(result: dict | None) -> dict:
    """The numbers a trainable reported (Ray's bookkeeping taken out)."""
    return {k: v for k, v in (result or {}).items() if k not in RAY_KEYS and not k.startswith(f"{PARAMS_KEY}/")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def reported_params(result: dict | None) -> dict:
    """Text settings a final report adds to the run's params (ChexReporter: the builder)."""
    result = result or {}
    params = dict(result.get(PARAMS_KEY) or {})
    params.update({k.split("/", 1)[1]: v for k, v in result.items() if k.startswith(f"{PARAMS_KEY}/")})
    return params


class RayMlflowCallback(Callback):
    """Mirror a Tuner's trials into MLflow experiment ``experiment`` (one parent run, a child per trial).

    tracking_uri: default MLFLOW_TRACKING_URI, else ``./mlflow/mlflow.db`` (where ``chex-tune pareto`` looks);
    objectives: checked in every final report (a trial that misses one is a FAILED run naming it) and
    ranked into the Pareto front at the end; searched: the names of your own sampled parameters (shown in
    tables; the CHEX ones are known from the config); early_stop: the Tuner's ``ParetoAsha`` scheduler, so
    the trials it stops end as KILLED runs tagged ``chex.stopped_at_epoch`` rather than FAILED ones.
    """

    def __init__(self, experiment: str, *, tracking_uri: str | None = None, objectives=None, searched=(),
                 sweep: str | None = None, parent_run_id: str | None = None, artifact_location: str | None = None,
                 early_stop=None):
        self.recorder = SweepRecorder(default_store_uri(tracking_uri), experiment, sweep=sweep,
                                      parent_run_id=parent_run_id, objectives=objectives,
                                      artifact_location=artifact_location)
        self.owns_parent = parent_run_id is None
        self.searched = tuple(searched)
        self.early_stop = early_stop
        self.disk_failure: Exception | None = None  # a write that failed for a full or read-only disk
        self._writer: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict:  # Ray saves the callback with the experiment (resume)
        return {**self.__dict__, "_writer": None, "disk_failure": None}

    def adopt_parent(self) -> None:
        """The recorder's parent run is opened and closed by its owner (``run_sweep``), not by this callback."""
        self.owns_parent = False

    @property
    def tracking_uri(self) -> str:
        return self.recorder.tracking_uri

    def _submit(self, job, *args, **kwargs) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._writer.submit(self._guarded, job, *args, **kwargs)

    def _guarded(self, job, *args, **kwargs) -> None:
        try:
            job(*args, **kwargs)
        except Exception as exc:  # MLflow trouble must not stop the sweep; say so and go on
            disk = disk_error(exc)
            if disk is None:
                logger.exception("MLflow logging failed (%s)", job.__name__)
            elif self.disk_failure is None:  # ... unless nothing can be recorded any more: then the sweep stops
                logger.error("MLflow cannot record this sweep any more (%s); stopping it", disk)
                self.disk_failure = exc

    def flush(self) -> None:
        """Wait for every queued MLflow write."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    # ------------------------------------------------------------------ Ray's calls (driver loop)
    def on_step_begin(self, iteration, trials, **info):
        if self.disk_failure is not None:  # running more trials would only lose them: end fit() with the cause
            raise self.disk_failure

    def setup(self, **info):
        self._submit(self.recorder.open)

    def on_trial_start(self, iteration, trials, trial, **info):
        searched = sorted({*self.searched, *searched_names(trial.config)})
        self._submit(self._start, trial.trial_id, dict(trial.config), searched)

    def _start(self, key: str, config: dict, searched: list[str]) -> None:
        try:
            params = trial_params(config)
        except ValueError as exc:  # the trial reports the same error itself; log what there is
            params = {k: v for k, v in config.items() if not isinstance(v, dict)}
            logger.warning("trial %s: settings not resolved (%s)", key, exc)
        parent = parent_of(config)
        member = {MEMBER_TAG: str(config[MEMBER_KEY])} if config.get(MEMBER_KEY) else {}
        self.recorder.start_trial(key, params, searched, parent=parent["trial_id"] if parent else None, tags=member)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(FINAL_KEY):
            return  # logged with the trial's files on completion
        step = result.get(EPOCH, result.get(ray_result.TRAINING_ITERATION, 0))
        self._submit(self.recorder.log_epoch, trial.trial_id, trainable_metrics(result), step=int(step))

    def on_trial_complete(self, iteration, trials, trial, **info):
        checkpoint = trial.checkpoint
        last = trial.last_result or {}
        epoch = self.early_stop.stopped_at(trial.trial_id) if self.early_stop is not None else None
        if epoch is not None:
            self._submit(self.recorder.stop_trial, trial.trial_id, epoch)
            return
        self._submit(self.recorder.complete_trial, trial.trial_id, trainable_metrics(last) or None,
                     pathlib.Path(checkpoint.path) if checkpoint is not None else None,
                     params=reported_params(last))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._submit(self.recorder.fail_trial, trial.trial_id, trial_error_text(trial))

    def on_experiment_end(self, trials, **info):
        if self.owns_parent:
            self._submit(self._close)
        self.flush()

    def _close(self) -> None:
        rows = self.recorder.close()
        if rows:
            logger.info("MLflow experiment %r: %d of %d trials on the Pareto front", self.recorder.experiment,
                        sum(row.rank == 0 for row in rows), len(rows))
