"""Reading finished sweeps back from MLflow: the experiment, its sweeps, their trial runs, ranked into fronts.

    client, uri = open_store("mlflow")
    trials = read_trials(client, "fashion_mnist_resnet18", objectives=parse_objectives("val_acc:max,macs:min"))
    for row in trials.front: print(row["run_id"], row["metrics"]["val_acc"])

A sweep is a parent run tagged ``chex.role = sweep``; its trials are the runs whose ``mlflow.parentRunId``
is that run. Only FINISHED trials are ranked (a failed, stopped or unfinished one enters
``non_dominated_ranks`` as NaN: rank -1). Reading all sweeps of an experiment ranks their trials together: one front per
experiment. MLflow and numpy only: no Ray, so these commands work where no sweep can run.
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass

from chex_tune.tuning.objectives import Objective, cost_objective, format_metric, parse_objectives  # noqa: F401
from chex_tune.tuning.pareto import non_dominated_ranks

ROLE_TAG = "chex.role"  # "sweep" on a sweep's parent run
SWEEP_TAG = "chex.sweep"  # the sweep's name, on the parent and on every trial
PARENT_TAG = "mlflow.parentRunId"
STOPPED_TAG = "chex.stopped_at_epoch"  # on a trial that early stopping (Pareto-ASHA) stopped: status KILLED
DEFAULT_OBJECTIVES = "val_acc:max,macs:min"
MAX_RUNS = 10000  # per search: far more trials than any sweep here runs


@dataclass
class Trials:
    """The trial runs of one experiment (all its sweeps, or one), ranked under ``objectives``."""

    experiment: str
    experiment_id: str
    sweeps: list[dict]  # {run_id, name} of each parent run read, newest first
    objectives: tuple[Objective, ...]
    rows: list[dict]  # see trial_rows

    @property
    def finished(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "FINISHED"]

    @property
    def stopped(self) -> list[dict]:
        """Trials stopped early (they never finished training: not on any front)."""
        return [row for row in self.rows if row["stopped_at"] is not None]

    @property
    def front(self) -> list[dict]:
        """Rank-0 runs, cheapest first (the first cost objective, else the first minimised one)."""
        return sorted((row for row in self.rows if row["rank"] == 0), key=lambda row: cost_key(row, self.objectives))


def cost_key(row: dict, objectives) -> float:
    """Order of a front: cheapest first (or the best first objective when no objective is a cost)."""
    cost = cost_objective(objectives)
    key = cost or tuple(objectives)[0]
    value = row["metrics"].get(key.name, math.nan)
    return (math.inf if math.isnan(value) else value) * (-1 if key.maximize else 1)


# ------------------------------------------------------------------------------------ the store
def default_tracking_uri(store: str | os.PathLike) -> str:
    """The SQLite database a sweep writes under its local store (the same rule as ``search.py``)."""
    return f"sqlite:///{pathlib.Path(store).expanduser().resolve() / 'mlflow.db'}"


def open_store(store: str | os.PathLike = "mlflow", tracking_uri: str | None = None):
    """An MlflowClient on ``tracking_uri`` (else MLFLOW_TRACKING_URI, else ``store``'s database), and the URI.

    A missing local database is an error: opening it would create an empty store and hide the mistake.
    """
    from mlflow import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        database = pathlib.Path(store).expanduser().resolve() / "mlflow.db"
        if not database.exists():
            raise ValueError(f"no MLflow store at {database}; run a sweep first (chex-tune sweep SPACE.yaml) "
                             "or pass --store DIR or --tracking-uri URI")
        uri = default_tracking_uri(store)
    return MlflowClient(tracking_uri=uri), uri


def find_experiment(client, name: str):
    """The active experiment called ``name``; otherwise an error that lists the ones there are."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no experiment {name!r} in the MLflow store; experiments: {', '.join(names) or '(none)'}")
    return experiment


def list_sweeps(client, experiment_id: str) -> list[dict]:
    """The experiment's sweeps (parent runs), newest first, as {run_id, name}."""
    parents = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=MAX_RUNS)
    return [{"run_id": run.info.run_id, "name": run.data.tags.get(SWEEP_TAG, run.info.run_name)} for run in parents]


def select_sweeps(client, experiment, sweep: str | None = None) -> list[dict]:
    """All sweeps of ``experiment``, or the one whose parent run id (or sweep name) is ``sweep``."""
    sweeps = list_sweeps(client, experiment.experiment_id)
    if not sweeps:
        raise ValueError(f"experiment {experiment.name!r} has no sweeps (no run tagged {ROLE_TAG}=sweep)")
    if sweep is None:
        return sweeps
    chosen = [s for s in sweeps if sweep in (s["run_id"], s["name"])]
    if not chosen:
        known = ", ".join(f"{s['run_id']} ({s['name']})" for s in sweeps)
        raise ValueError(f"no sweep {sweep!r} in experiment {experiment.name!r}; its sweeps: {known}")
    return chosen[:1]


# ------------------------------------------------------------------------------------ the trials
def trial_rows(client, experiment_id: str, parent_run_ids, objectives, *, include_stopped: bool = False) -> list[dict]:
    """Every trial run of the given sweeps, ranked together into Pareto fronts.

    A row: run_id, sweep (parent run id), status, params, metrics, error, number (per sweep),
    searched (names of the searched settings), stopped_at (the epoch early stopping stopped it at, else
    None), rank (0 = the front; -1 = failed, stopped, unfinished, or an objective missing). With
    ``include_stopped`` the stopped trials are ranked too, on the metrics of the epoch they stopped at.
    Ordered by sweep as given, then trial number.
    """
    objectives = parse_objectives(objectives)
    rows = []
    for parent_run_id in parent_run_ids:
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                                  max_results=MAX_RUNS)
        sweep_rows = [{
            "run_id": run.info.run_id, "sweep": parent_run_id, "status": run.info.status,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics), "error": run.data.tags.get("error"),
            "number": int(run.data.tags.get("chex.trial_number", 0)),
            "stopped_at": int(run.data.tags[STOPPED_TAG]) if STOPPED_TAG in run.data.tags else None,
            "searched": [name for name in run.data.tags.get("chex.searched", "").split(",") if name]}
            for run in runs]
        rows += sorted(sweep_rows, key=lambda row: row["number"])
    ranked = [row["status"] == "FINISHED" or (include_stopped and row["stopped_at"] is not None) for row in rows]
    values = [[row["metrics"].get(o.name, math.nan) if use else math.nan for o in objectives]
              for row, use in zip(rows, ranked)]
    ranks = non_dominated_ranks(values, [o.mode == "max" for o in objectives]) if rows else []
    for row, rank in zip(rows, ranks):
        row["rank"] = int(rank)
    return rows


def read_trials(client, experiment_name: str, sweep: str | None = None, objectives=DEFAULT_OBJECTIVES, *,
                include_stopped: bool = False) -> Trials:
    """The experiment's trials (one sweep's when ``sweep`` is a parent run id or sweep name), ranked.

    Errors (ValueError, one line each): unknown experiment, unknown sweep, no trial runs, an objective
    that no run ever logged (with the metrics that were logged).
    """
    objectives = parse_objectives(objectives)
    experiment = find_experiment(client, experiment_name)
    sweeps = select_sweeps(client, experiment, sweep)
    rows = trial_rows(client, experiment.experiment_id, [s["run_id"] for s in sweeps], objectives,
                      include_stopped=include_stopped)
    where = f"experiment {experiment_name!r}" + (f", sweep {sweeps[0]['name']}" if sweep else "")
    if not rows:
        raise ValueError(f"{where} has no trial runs yet")
    logged = sorted({name for row in rows for name in row["metrics"]})
    for objective in objectives:
        if objective.name not in logged:
            raise ValueError(f"objective {objective.name!r} was never logged by a run of {where}; "
                             f"logged metrics: {', '.join(logged) or '(none)'}")
    return Trials(experiment_name, experiment.experiment_id, sweeps, objectives, rows)


def tag_front(client, rows) -> int:
    """Tag every finished trial ``pareto=true|false`` and ``pareto_rank=<rank>``; returns how many were tagged.

    The tags describe the ranking the rows came from (one sweep, or the whole experiment): tagging
    again after another read overwrites them.
    """
    from mlflow.entities import RunTag

    tagged = 0
    for row in rows:
        if row["status"] != "FINISHED":
            continue
        client.log_batch(row["run_id"], tags=[RunTag("pareto", "true" if row["rank"] == 0 else "false"),
                                              RunTag("pareto_rank", str(row["rank"]))])
        tagged += 1
    return tagged


def sweep_objectives(client, experiment_name: str, sweep: str | None = None) -> str:
    """The objectives the experiment's (newest, or the given) sweep ran with; the default when none are recorded."""
    experiment = find_experiment(client, experiment_name)
    for parent in select_sweeps(client, experiment, sweep):
        recorded = client.get_run(parent["run_id"]).data.tags.get("chex.objectives")
        if recorded:
            return recorded
    return DEFAULT_OBJECTIVES
