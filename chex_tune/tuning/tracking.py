"""MLflow tracking of a sweep, from the Ray driver only: one writer, so SQLite never sees two.

One parent run per sweep, one child run per trial (nested under the parent through the
``mlflow.parentRunId`` tag). A child run holds every setting as a parameter, per-epoch metrics (step =
epoch), the final metrics of the compact model, and as artifacts the compact model
(``compact.pt``, loadable with ``chex_tune.load_compact``; also logged as an ``mlflow.pytorch`` model),
``metrics.json``, ``config.yaml``, ``widths.json`` and ``widths.png``. A trial that fails ends as a
FAILED run with its error in the ``error`` tag and ``error.txt``.

The callback is pickled into Ray's experiment state and comes back on ``--resume``: it keeps only
plain values and finds runs again by the ``chex.trial_id`` tag.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from ray.tune import Callback

from chex_tune.tuning.runs import PARENT_TAG, SWEEP_TAG
from chex_tune.tuning.trainable import FINAL_REPORT  # Ray adds bookkeeping keys to results: not logged

EPOCH_KEYS = ("train_loss", "val_acc", "lr", "epoch_seconds", "macs", "params", "sparsity")

TRIAL_TAG = "chex.trial_id"


def client_for(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(client, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def flat_params(settings: dict) -> dict[str, str]:
    return {key: "None" if value is None else str(value) for key, value in sorted(settings.items())}


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


def log_metrics(client, run_id: str, values: dict, *, step: int) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


class MlflowSweepCallback(Callback):
    """Ray Tune callback that mirrors every trial of one sweep into MLflow.

    Ray calls it on the driver's scheduling loop, so every MLflow write goes to one background thread
    (FIFO, one connection): logging a compact model never holds up the start of the next trial, and
    the store still has a single writer. ``on_experiment_end`` waits for the queue to drain.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep = sweep
        self._client = None
        self._writer: ThreadPoolExecutor | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id (touched by the writer thread only)

    def __getstate__(self) -> dict:  # Ray saves the callback with the experiment; runs are found again by tag
        return {**self.__dict__, "_client": None, "_writer": None, "_runs": {}}

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def _submit(self, job, *args) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._writer.submit(self._guarded, job, *args)

    def _guarded(self, job, *args) -> None:
        try:
            job(*args)
        except Exception as exc:  # MLflow trouble must not stop the sweep; say so and go on
            print(f"[chex-tune] MLflow logging failed ({job.__name__}): {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    # ------------------------------------------------------------------ Ray's calls (driver loop)
    def on_trial_start(self, iteration, trials, trial, **info):
        from chex_tune.config import RunConfig
        from chex_tune.tuning.trainable import trial_settings

        settings = RunConfig.from_dict(trial_settings(trial.config)).to_dict()  # every setting, defaults too
        self._submit(self._start, trial.trial_id, ",".join(trial.config["chex_searched"]), flat_params(settings))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._submit(self._result, trial.trial_id, dict(result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        checkpoint = trial.checkpoint
        self._submit(self._complete, trial.trial_id, checkpoint.path if checkpoint is not None else None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._submit(self._fail, trial.trial_id, trial_error_text(trial))

    def on_experiment_end(self, trials, **info):
        self.flush()

    # -------------------------------------------------------------------- the writer thread's jobs
    def _run_id(self, trial_id: str) -> str | None:
        if trial_id not in self._runs:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                                                    f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
            if found:
                self._runs[trial_id] = found[0].info.run_id
        return self._runs.get(trial_id)

    def _start(self, trial_id: str, searched: str, params: dict) -> None:
        previous = self._run_id(trial_id)
        if previous is not None:  # restarted after an interruption: it trains again from scratch
            self.client.delete_run(previous)
        number = len(self.client.search_runs([self.experiment_id],
                                             filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")) + 1
        run = self.client.create_run(self.experiment_id, run_name=f"{self.sweep}-trial-{trial_id}", tags={
            PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, SWEEP_TAG: self.sweep,
            "chex.searched": searched, "chex.trial_number": str(number)})
        self._runs[trial_id] = run.info.run_id
        log_params(self.client, run.info.run_id, params)

    def _result(self, trial_id: str, result: dict) -> None:
        run_id = self._run_id(trial_id)
        if run_id is None:
            return
        if result.get("final"):
            log_metrics(self.client, run_id, {k: result[k] for k in FINAL_REPORT if k in result},
                        step=int(result["epoch"]))
            self.client.log_param(run_id, "stem_used", result.get("stem_used"))
        else:
            log_metrics(self.client, run_id, {k: result[k] for k in EPOCH_KEYS if k in result},
                        step=int(result["epoch"]))

    def _complete(self, trial_id: str, checkpoint_path: str | None) -> None:
        run_id = self._run_id(trial_id)
        if run_id is None:
            return
        if checkpoint_path is None:
            self._fail(trial_id, "the trial ended without its final report (no compact model)")
            return
        log_trial_artifacts(self.client, self.tracking_uri, run_id, pathlib.Path(checkpoint_path))
        self.client.set_terminated(run_id, "FINISHED")

    def _fail(self, trial_id: str, message: str) -> None:
        run_id = self._run_id(trial_id)
        if run_id is None:
            return
        self.client.set_tag(run_id, "error", last_line(message)[:4000])
        self.client.log_text(run_id, message, "error.txt")
        self.client.set_terminated(run_id, "FAILED")


def trial_error_text(trial) -> str:
    """The trial's error with its traceback, read from the file Ray writes on the driver's disk."""
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    error = trial.get_error()  # after a sync, from the experiment's storage
    return str(error) if error is not None else "the trial failed (no error recorded by Ray)"


def last_line(text: str) -> str:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def log_trial_artifacts(client, tracking_uri: str, run_id: str, directory: pathlib.Path) -> None:
    """The trial's files, a width plot and an ``mlflow.pytorch`` copy of the compact model."""
    from chex_tune.tuning.plots import plot_widths

    client.log_artifacts(run_id, str(directory))
    widths = json.loads((directory / "widths.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        if widths:
            plot = pathlib.Path(tmp) / "widths.png"
            plot_widths(widths, plot, title=f"kept channels per group (run {run_id[:8]})")
            client.log_artifact(run_id, str(plot))
        client.log_dict(run_id, {w["group"]: w["width"] for w in widths}, "widths_by_group.json")
    log_pytorch_model(tracking_uri, run_id, directory / "compact.pt")


@contextlib.contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API for a moment, without leaving MLFLOW_TRACKING_URI set for later sweeps."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # also exports MLFLOW_TRACKING_URI, which later sweeps would pick up
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets it again


def log_pytorch_model(tracking_uri: str, run_id: str, compact_path: pathlib.Path) -> None:
    """The compact model as an ``mlflow.pytorch`` model, so ``mlflow.pytorch.load_model`` serves it too."""
    import mlflow.pytorch
    import torch

    import mlflow
    from chex_tune import __version__, load_compact

    model = load_compact(compact_path)
    shape = model.chex_recipe["input_shape"]
    example = torch.zeros([2, *shape[1:]]).numpy()  # batch 2: an exported batch of 1 would be fixed to 1
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id, nested=True):
        mlflow.pytorch.log_model(model, name="model", input_example=example,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                   f"chex-tune=={__version__}"])
