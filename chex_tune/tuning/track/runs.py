"""Reading finished sweeps back from MLflow: the experiment, its sweeps, their trial runs, ranked into fronts.

    client, uri = open_store("mlflow")
    trials = read_trials(client, "fashion_mnist_resnet18", objectives="val_acc:max,macs:min")
    for row in trials.front: print(row.run_id, row.metrics["val_acc"])

A sweep is a parent run tagged ``chex.role = sweep``; its trials are the runs whose ``mlflow.parentRunId``
is that run. Only FINISHED trials are ranked (a failed, stopped or unfinished one enters
``non_dominated_ranks`` as NaN: rank -1), and of those only the ones within the sweep's ``--max-drop`` (the rule its
parent run records: ``tuning/reference.py``). Reading all sweeps of an experiment ranks their trials together:
one front per experiment, each trial judged by its own sweep's rule. MLflow and numpy only: no Ray, so these
commands work where no sweep can run.
"""

from __future__ import annotations

import math
import os
import pathlib
import tempfile
from dataclasses import dataclass

from chex_tune.train.artifacts import COMPACT
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, Objective, cost_objective, objectives_text, parse_objectives
from chex_tune.tuning.pareto import non_dominated_ranks
from chex_tune.tuning.protocol import OBJECTIVES_TAG, PARENT_TAG, ROLE_TAG, SWEEP_TAG, TrialRow
from chex_tune.tuning.reference import BEYOND_TAG, MaxDrop

MAX_RUNS = 10000  # per search: far more trials than any sweep here runs


@dataclass
class Trials:
    """The trial runs of one experiment (all its sweeps, or one), ranked under ``objectives``."""

    experiment: str
    experiment_id: str
    sweeps: list[dict]  # {run_id, name} of each parent run read, newest first
    objectives: tuple[Objective, ...]
    rows: list[TrialRow]

    @property
    def finished(self) -> list[TrialRow]:
        return [row for row in self.rows if row.finished]

    @property
    def stopped(self) -> list[TrialRow]:
        """Trials stopped early (they never finished training: not on any front)."""
        return [row for row in self.rows if row.stopped_at is not None]

    @property
    def beyond(self) -> list[TrialRow]:
        """Finished trials beyond their sweep's --max-drop (not on any front)."""
        return [row for row in self.rows if row.beyond_max_drop]

    @property
    def front(self) -> list[TrialRow]:
        """Rank-0 runs, cheapest first (the first cost objective, else the first minimised one)."""
        return sorted((row for row in self.rows if row.rank == 0), key=lambda row: cost_key(row, self.objectives))


def cost_key(row: TrialRow, objectives) -> float:
    """Order of a front: cheapest first (or the best first objective when no objective is a cost)."""
    key = cost_objective(objectives) or tuple(objectives)[0]
    value = row.value(key.name)
    return (math.inf if math.isnan(value) else value) * (-1 if key.maximize else 1)


def rank(rows: list[TrialRow], objectives, *, include_stopped: bool = False) -> list[TrialRow]:
    """Set every row's Pareto rank under ``objectives`` (finished rows only, or stopped ones too; never one beyond
    its sweep's --max-drop); returns them."""
    objectives = parse_objectives(objectives)
    ranked = [(row.finished or (include_stopped and row.stopped_at is not None)) and not row.beyond_max_drop
              for row in rows]
    values = [[row.value(o.name) if use else math.nan for o in objectives] for row, use in zip(rows, ranked)]
    ranks = non_dominated_ranks(values, [o.maximize for o in objectives]) if rows else []
    for row, value in zip(rows, ranks):
        row.rank = int(value)
    return rows


# ------------------------------------------------------------------------------------ experiments and sweeps
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
def trial_rows(client, experiment_id: str, parent_run_ids, objectives, *,
               include_stopped: bool = False) -> list[TrialRow]:
    """Every trial run of the given sweeps, ranked together into Pareto fronts (``TrialRow.rank``). With
    ``include_stopped`` the stopped trials are ranked too, on the metrics of the epoch they stopped at. A sweep run
    with ``--max-drop`` marks its trials beyond it (``TrialRow.beyond_max_drop``), which are not ranked. Ordered by
    sweep as given, then trial number."""
    rows = []
    for parent_run_id in parent_run_ids:
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                                  max_results=MAX_RUNS)
        sweep_rows = sorted((TrialRow.from_run(run) for run in runs), key=lambda row: row.number)
        mark_beyond(sweep_rows, MaxDrop.of_run(client.get_run(parent_run_id)))
        rows += sweep_rows
    return rank(rows, objectives, include_stopped=include_stopped)


def mark_beyond(rows: list[TrialRow], rule: MaxDrop | None) -> list[TrialRow]:
    """Mark the finished rows whose val_acc is beyond ``rule`` (one sweep's --max-drop; None: no rule); returns them.
    A failed or stopped trial is not judged: it is off the front already (a stopped one ranked with
    ``include_stopped`` is ranked on its last epoch, as it is without the rule)."""
    from chex_tune.train.metrics import VAL_ACC

    for row in rows:
        row.beyond_max_drop = rule is not None and row.finished and rule.beyond(row.metrics.get(VAL_ACC))
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
    logged = sorted({name for row in rows for name in row.metrics})
    for objective in objectives:
        if objective.name not in logged:
            raise ValueError(f"objective {objective.name!r} was never logged by a run of {where}; "
                             f"logged metrics: {', '.join(logged) or '(none)'}")
    return Trials(experiment_name, experiment.experiment_id, sweeps, objectives, rows)


def tag_front(client, rows: list[TrialRow]) -> int:
    """Tag every finished trial ``pareto=true|false`` and ``pareto_rank=<rank>`` (and ``chex.beyond_max_drop=true``
    on one beyond its sweep's --max-drop, whose rank is -1); returns how many were tagged.

    The tags describe the ranking the rows came from (one sweep, or the whole experiment): tagging
    again after another read overwrites them.
    """
    from mlflow.entities import RunTag

    finished = [row for row in rows if row.finished]
    for row in finished:
        beyond = [RunTag(BEYOND_TAG, "true")] if row.beyond_max_drop else []
        client.log_batch(row.run_id, tags=[RunTag("pareto", "true" if row.rank == 0 else "false"),
                                           RunTag("pareto_rank", str(row.rank)), *beyond])
    return len(finished)


def sweep_objectives(client, experiment_name: str, sweep: str | None = None) -> str:
    """The objectives the experiment's (newest, or the given) sweep ran with; the default when none are recorded."""
    experiment = find_experiment(client, experiment_name)
    for parent in select_sweeps(client, experiment, sweep):
        recorded = client.get_run(parent["run_id"]).data.tags.get(OBJECTIVES_TAG)
        if recorded:
            return recorded
    return objectives_text(DEFAULT_OBJECTIVES)


# ------------------------------------------------------------------------------------ models by URI
MODEL_URI_SCHEMES = ("runs:/", "models:/")


def is_model_uri(text: str | None) -> bool:
    return isinstance(text, str) and text.startswith(MODEL_URI_SCHEMES)


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``("runs", RUN_ID, "")``, ``("alias", NAME, ALIAS)`` or ``("version", NAME, VERSION)``; a malformed URI is an
    error before any store is opened."""
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/")[0]
        if run_id:
            return "runs", run_id, ""
    else:
        name, _, rest = uri[len("models:/"):].partition("/")
        name, at, alias = name.partition("@")
        if name and at and alias:
            return "alias", name, alias
        if name and rest.isdigit():
            return "version", name, rest
    raise ValueError(f"--init {uri!r}: expected runs:/RUN_ID, models:/NAME@ALIAS or models:/NAME/VERSION")


def fetch_compact(client, uri: str, directory: str | os.PathLike) -> pathlib.Path:
    """The ``compact.pt`` of the run an MLflow model URI names (``parse_model_uri``; a registered version's source
    run), downloaded into ``directory`` once per run. Errors name the URI and what was not found."""
    from mlflow.exceptions import MlflowException

    kind, name, ref = parse_model_uri(uri)
    try:
        if kind == "runs":
            run_id = client.get_run(name).info.run_id  # a missing run fails here, with MLflow's message
        else:
            version = client.get_model_version_by_alias(name, ref) if kind == "alias" else \
                client.get_model_version(name, ref)
            run_id = version.run_id
        target = pathlib.Path(directory) / f"{run_id}-{COMPACT}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                os.replace(client.download_artifacts(run_id, COMPACT, tmp), target)
    except MlflowException as exc:
        raise ValueError(f"--init {uri}: {exc.message.splitlines()[0]}") from None
    return target


def resolve_init(init: str, *, store: str | os.PathLike = "mlflow", tracking_uri: str | None = None) -> str:
    """A trained start as a local file (``train.weights.local_start``): an MLflow model URI's compact.pt downloaded
    under ``store/init`` first."""
    from chex_tune.train.weights import local_start
    from chex_tune.tuning.track.store import open_store

    if not is_model_uri(init):
        return local_start(init)
    parse_model_uri(init)
    client, _ = open_store(store, tracking_uri)
    return local_start(fetch_compact(client, init, pathlib.Path(store).expanduser().resolve() / "init"))
