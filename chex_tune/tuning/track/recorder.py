"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial, from one writer process.

A child run (nested under the parent through the ``mlflow.parentRunId`` tag) holds the trial's settings
as flat parameters, per-epoch metrics (step = epoch), the final metrics, and as artifacts the trial's
files (``compact.pt``, loadable with ``chex_tune.load_compact``, also logged as an ``mlflow.pytorch``
model in the pt2 format; ``metrics.json``, ``widths.json``, a ``widths.png`` plot and the settings
file). A trial that fails, never reports, or never reports an objective ends as a FAILED run with the
reason in the ``error`` tag and ``error.txt``; one stopped early (Pareto-ASHA) ends KILLED with the tag
``chex.stopped_at_epoch``, its per-epoch metrics and no model.

``SweepRecorder`` does the writing; the Ray Tune callback (``ray_callback``) and the Optuna callback
(``optuna_callback``) feed it, and ``run_sweep`` opens and closes its sweep through the same one. It keeps only
plain values (Ray pickles its callbacks into the experiment state) and finds runs again by the ``chex.trial_id``
tag. No Ray here.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import tempfile

from chex_tune.train.artifacts import COMPACT, LINEAGE, WIDTHS, is_complete, read_metrics
from chex_tune.train.metrics import EPOCH
from chex_tune.tuning import protocol
from chex_tune.tuning.objectives import missing_objectives, objectives_text, parse_objectives
from chex_tune.tuning.protocol import TrialRow
from chex_tune.tuning.track.runs import tag_front, trial_rows
from chex_tune.tuning.track.store import artifact_location_for, client_for, using_tracking_uri

logger = logging.getLogger(__name__)


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
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != EPOCH]  # the step, not a metric
    if metrics:
        client.log_batch(run_id, metrics=metrics)


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
    """The trial's files, a width plot and an ``mlflow.pytorch`` copy of the compact model.

    The plot and the MLflow model are extras: when one fails (e.g. the builder of a user's model is not
    importable in this process) the run says so in a ``chex.warning`` tag and keeps its files.
    """
    from chex_tune.tuning.plots import plot_widths

    client.log_artifacts(run_id, str(directory))
    problems = []
    widths_file = directory / WIDTHS
    widths = json.loads(widths_file.read_text()) if widths_file.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        if widths:
            plot = pathlib.Path(tmp) / "widths.png"
            plot_widths(widths, plot, title=f"kept channels per group (run {run_id[:8]})")
            client.log_artifact(run_id, str(plot))
        client.log_dict(run_id, {w["group"]: w["width"] for w in widths}, "widths_by_group.json")
    try:
        log_pytorch_model(tracking_uri, run_id, directory / COMPACT)
    except Exception as exc:  # noqa: BLE001 - the run keeps compact.pt; say why the MLflow model is missing
        problems.append(f"no mlflow.pytorch model: {type(exc).__name__}: {exc}")
    if problems:
        logger.warning("run %s: %s", run_id, "; ".join(problems))
        client.set_tag(run_id, "chex.warning", "; ".join(problems)[:4000])


def log_pytorch_model(tracking_uri: str, run_id: str, compact_path: pathlib.Path) -> None:
    """The compact model as an ``mlflow.pytorch`` model in the pt2 (``torch.export``) format: MLflow loads it
    without pickle and without the model's class, so its environment needs torch and numpy only (chex-tune
    itself is not required: a pin of it would name a package no index serves)."""
    import mlflow
    import mlflow.pytorch
    import numpy
    import torch

    from chex_tune import load_compact

    model = load_compact(compact_path)
    shape = model.chex_recipe["input_shape"]
    example = torch.zeros([2, *shape[1:]]).numpy()  # batch 2: an exported batch of 1 would be fixed to 1
    with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id, nested=True):
        mlflow.pytorch.log_model(model, name="model", input_example=example, serialization_format="pt2",
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                   f"numpy=={numpy.__version__}"])


def log_lineage(client, run_id: str, lineage: dict) -> None:
    """Where a trial came from, on its run: its dataset as an MLflow dataset input (the run page's "Datasets") and
    the digest of its trained start's weights as the param ``init_digest``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = lineage.get("dataset")
    if dataset:
        sizes = {k: dataset[k] for k in ("train_size", "val_size", "test_size") if k in dataset}
        entry = Dataset(name=dataset["name"], digest=dataset["digest"], source_type="local",
                        source=json.dumps({"uri": str(dataset.get("source", ""))}), profile=json.dumps(sizes))
        client.log_inputs(run_id, datasets=[DatasetInput(entry, tags=[InputTag("mlflow.data.context", "training")])])
    if lineage.get("init_digest"):
        log_params(client, run_id, {"init_digest": lineage["init_digest"]})


# ------------------------------------------------------------------------------------ the recorder
class SweepRecorder:
    """Writes one sweep to MLflow: its parent run, a child run per trial, the Pareto tags at the end.

    ``key`` names a trial (Ray's trial id, Optuna's trial number); ``objectives`` (optional) are checked
    in every final report and rank the front on ``close``. Give ``parent_run_id`` to record into an
    existing sweep run (``run_sweep`` creates its own); otherwise ``open`` creates one.
    """

    def __init__(self, tracking_uri: str, experiment: str, *, sweep: str | None = None,
                 parent_run_id: str | None = None, objectives=None, artifact_location: str | None = None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep = sweep or f"{experiment}-{time_stamp()}"
        self.parent_run_id = parent_run_id
        self.objectives = parse_objectives(objectives) if objectives else ()
        self.artifact_location = artifact_location
        self.experiment_id: str | None = None
        self._client = None
        self._runs: dict[str, str] = {}
        self._last_epoch: dict[str, tuple] = {}  # key -> (step, metrics) last logged

    def __getstate__(self) -> dict:  # plain values only: Ray pickles callbacks; runs are found again by tag
        return {**self.__dict__, "_client": None, "_runs": {}, "_last_epoch": {}}

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    # ------------------------------------------------------------------------------ the sweep
    def open(self, *, params: dict | None = None, tags: dict | None = None) -> str:
        """The sweep's parent run (created unless given); returns its id."""
        if self.experiment_id is None:
            self.experiment_id = ensure_experiment(self.client, self.experiment,
                                                   self.artifact_location or artifact_location_for(self.tracking_uri))
        if self.parent_run_id is None:
            objectives = {protocol.OBJECTIVES_TAG: objectives_text(self.objectives)} if self.objectives else {}
            run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags={
                protocol.SWEEP_TAG: self.sweep, protocol.ROLE_TAG: "sweep", **objectives, **(tags or {})})
            self.parent_run_id = run.info.run_id
            if params:
                log_params(self.client, self.parent_run_id, flat_params(params))
        return self.parent_run_id

    def close(self, status: str = "FINISHED") -> list[TrialRow]:
        """Rank the trials (when objectives are known), tag the front, end the parent run; returns the rows."""
        rows = []
        if self.objectives and self.parent_run_id is not None:
            rows = trial_rows(self.client, self.experiment_id, [self.parent_run_id], self.objectives)
            tag_front(self.client, rows)
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status)
        return rows

    # ------------------------------------------------------------------------------ one trial
    def run_id(self, key: str) -> str | None:
        if key not in self._runs:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{protocol.TRIAL_TAG}` = '{key}' and "
                                                    f"tags.`{protocol.PARENT_TAG}` = '{self.parent_run_id}'")
            if found:
                self._runs[key] = found[0].info.run_id
        return self._runs.get(key)

    def start_trial(self, key: str, params: dict, searched=(), *, parent: str | None = None,
                    tags: dict | None = None) -> str:
        """A new child run with ``params`` (a trial restarted after an interruption replaces its old run); ``parent``:
        the key of the trial it started from (an inheriting sweep's), recorded as the tag chex.parent_run and the
        param parent_run; ``tags``: the run's own (a family member's name)."""
        self.open()
        previous = self.run_id(key)
        if previous is not None:
            self.client.delete_run(previous)
        siblings = f"tags.`{protocol.PARENT_TAG}` = '{self.parent_run_id}'"
        number = len(self.client.search_runs([self.experiment_id], filter_string=siblings)) + 1
        run = self.client.create_run(self.experiment_id, run_name=f"{self.sweep}-trial-{key}", tags={
            protocol.PARENT_TAG: self.parent_run_id, protocol.TRIAL_TAG: key, protocol.SWEEP_TAG: self.sweep,
            protocol.SEARCHED_TAG: ",".join(searched), protocol.NUMBER_TAG: str(number),
            **({protocol.PARENT_RUN_TAG: self.run_id(parent) or ""} if parent is not None else {}), **(tags or {})})
        self._runs[key] = run.info.run_id
        lineage = {"parent_run": self.run_id(parent) or ""} if parent is not None else {}
        log_params(self.client, run.info.run_id, flat_params({**params, **lineage}))
        return run.info.run_id

    def log_epoch(self, key: str, metrics: dict, *, step: int) -> None:
        run_id = self.run_id(key)
        if run_id is not None:
            log_metrics(self.client, run_id, metrics, step=step)
            self._last_epoch[key] = (step, dict(metrics))

    def complete_trial(self, key: str, final: dict | None, directory: pathlib.Path | None, *,
                       params: dict | None = None, history=()) -> str:
        """Log the final report and the trial's files and end the run FINISHED, or FAILED when the report is
        missing, lacks an objective, or came without the trial's files. Returns the status."""
        run_id = self.run_id(key)
        if run_id is None:
            return "UNKNOWN"
        problem = self.check_final(final, directory)
        for entry in history:
            self.log_epoch(key, entry, step=int(entry.get(EPOCH, 0)))
        if final:  # what the last epoch already logged at the same step is not logged twice
            step = int(final.get(EPOCH, 0) or 0)
            last_step, last = self._last_epoch.get(key, (None, {}))
            log_metrics(self.client, run_id, {k: v for k, v in final.items()
                                              if not (last_step == step and last.get(k) == v)}, step=step)
        if params:
            log_params(self.client, run_id, flat_params(params))
        if problem is not None:
            self.fail_trial(key, problem)
            return "FAILED"
        log_trial_artifacts(self.client, self.tracking_uri, run_id, pathlib.Path(directory))
        log_lineage(self.client, run_id, read_metrics(directory).get(LINEAGE) or {})
        self.client.set_terminated(run_id, "FINISHED")
        return "FINISHED"

    def check_final(self, final: dict | None, directory) -> str | None:
        """Why a trial's final report cannot make a finished run (None when it can)."""
        if not final:
            return ("the trainable returned without reporting any result; report metrics with "
                    "ChexReporter.report()/finish() (or tune.report)")
        missing = missing_objectives(final, self.objectives)
        if missing:
            reported = sorted(k for k in final if not missing_objectives(final, [k]))
            return (f"objective(s) {missing} never reported by the trainable; its final report has: "
                    f"{', '.join(reported) or '(no metrics)'}")
        if not is_complete(directory):
            return ("the trial ended without its compact model: finish it with ChexReporter.finish(), which "
                    "reports the compact model and its files as the trial's result")
        return None

    def stop_trial(self, key: str, epoch: int) -> None:
        """A trial stopped early (its per-epoch metrics are logged already): KILLED, tagged with the epoch, no model."""
        run_id = self.run_id(key)
        if run_id is None:
            return
        self.client.set_tag(run_id, protocol.STOPPED_TAG, str(int(epoch)))
        self.client.set_terminated(run_id, "KILLED")

    def fail_trial(self, key: str, message: str) -> None:
        run_id = self.run_id(key)
        if run_id is None:
            return
        self.client.set_tag(run_id, protocol.ERROR_TAG, last_line(message)[:4000])
        self.client.log_text(run_id, message, "error.txt")
        self.client.set_terminated(run_id, "FAILED")


def time_stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")
