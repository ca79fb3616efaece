"""What a trial is given, what it reports, and how it is read back: the contract between trainables and the sweep.

A trial's config (from Ray or Optuna) holds the sampled settings at the top level, as the searchers sample
them, next to constants chex-tune adds: ``chex_fixed`` (settings every trial shares: CHEX settings, or for
the built-in trainable every RunConfig setting), ``chex_searched`` (the names sampled) and, for the built-in
trainable, ``chex_threads``. Only those names are read back as settings, so a user's own ``seed`` or ``lr``
is never mistaken for one.

A trial reports per epoch, then once more with ``chex_final: True``: its final metrics, text params under
``chex_params`` and its files (``chex_tune.train.artifacts``) as the checkpoint. Read back from MLflow, a
trial is a ``TrialRow``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

FIXED_KEY = "chex_fixed"
SEARCHED_KEY = "chex_searched"
THREADS_KEY = "chex_threads"  # torch threads for a built-in trial's CPU share
WORKERS_KEY = "chex_workers"  # a multi-worker trial's workers (tuning/options.py: Workers)
PARENT_KEY = "chex_parent"  # an inheriting trial's parent: {"path": its compact.pt, "trial_id"} (tuning/lineage.py)
MEMBER_KEY = "chex_member"  # a family member's name ("dense", "0.25": its budget), tagged chex.member on its run
RESERVED_KEYS = (FIXED_KEY, SEARCHED_KEY, THREADS_KEY, WORKERS_KEY, PARENT_KEY, MEMBER_KEY)
FINAL_KEY = "chex_final"  # True in a trial's last report, the one that carries its files
PARAMS_KEY = "chex_params"  # text settings a final report adds to the trial's MLflow params
OPTUNA_ATTR = "chex"  # user attribute of an Optuna trial: {"metrics", "artifacts", "temporary", "settings", ...}

# MLflow tags of a sweep's runs
ROLE_TAG = "chex.role"  # "sweep" on a sweep's parent run
SWEEP_TAG = "chex.sweep"  # the sweep's name, on the parent and on every trial
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "chex.trial_id"  # Ray's trial id or Optuna's trial number
NUMBER_TAG = "chex.trial_number"
SEARCHED_TAG = "chex.searched"
OBJECTIVES_TAG = "chex.objectives"
PARENT_RUN_TAG = "chex.parent_run"  # on an inheriting trial's run: the run of the trial it started from
MEMBER_TAG = "chex.member"  # on a family member's run: its name (MEMBER_KEY)
STOPPED_TAG = "chex.stopped_at_epoch"  # on a trial that early stopping (Pareto-ASHA, an Optuna pruner) stopped
OLD_OPTUNA_STOPPED_TAG = "chex.stopped"  # "true": what earlier stores wrote on an Optuna-stopped trial (no epoch)
ERROR_TAG = "error"


@dataclass
class TrialRow:
    """One trial run of a sweep as read from MLflow, ranked among the trials read with it."""

    run_id: str
    sweep: str  # the parent run id
    status: str  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    params: dict = field(default_factory=dict)  # as logged: text
    metrics: dict = field(default_factory=dict)  # the last value of each
    error: str | None = None
    number: int = 0  # per sweep, in start order
    searched: list[str] = field(default_factory=list)  # names of the searched settings
    stopped_at: int | None = None  # the epoch early stopping stopped it at
    parent_run: str | None = None  # in an inheriting sweep: the run of the trial it started from
    member: str | None = None  # in a family: the member's name ("dense", or its MACs budget as "0.25")
    beyond_max_drop: bool = False  # more val accuracy lost than the sweep's --max-drop allows (never on a front)
    rank: int = -1  # 0: the Pareto front; -1: failed, stopped, unfinished, beyond --max-drop or an objective missing

    @classmethod
    def from_run(cls, run) -> TrialRow:
        tags = run.data.tags
        return cls(run_id=run.info.run_id, sweep=tags.get(PARENT_TAG, ""), status=run.info.status,
                   params=dict(run.data.params), metrics=dict(run.data.metrics), error=tags.get(ERROR_TAG),
                   number=int(tags.get(NUMBER_TAG, 0)),
                   searched=[name for name in tags.get(SEARCHED_TAG, "").split(",") if name],
                   stopped_at=_stopped_at(tags), parent_run=tags.get(PARENT_RUN_TAG) or None,
                   member=tags.get(MEMBER_TAG))

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    def value(self, name: str) -> float:
        """A metric's value, NaN when the run never logged it."""
        return self.metrics.get(name, math.nan)


def _stopped_at(tags: Mapping) -> int | None:
    if STOPPED_TAG in tags:
        return int(tags[STOPPED_TAG])
    return 0 if tags.get(OLD_OPTUNA_STOPPED_TAG) == "true" else None  # stopped, at an epoch it did not record


# ------------------------------------------------------------------------------------ a trial's config
def searched_names(config: Mapping) -> list[str]:
    return list(config.get(SEARCHED_KEY) or ()) if isinstance(config, Mapping) else []


def parent_of(config: Mapping) -> dict | None:
    """The parent an inheriting trial's config names (``path`` of its compact model, ``trial_id``), or None."""
    parent = config.get(PARENT_KEY) if isinstance(config, Mapping) else None
    return dict(parent) if parent else None


def parent_model(config: Mapping, *, map_location="cpu"):
    """The compact model a trial of an inheriting sweep or a family starts from (its parent's, loaded without pickle),
    or None: the trial starts from the user's own trained model. In a trainable of your own::

        model = parent_model(config) or my_trained_model()
        chex = ChexReporter(model, example, config, ...)   # compresses it further, to the trial's budget
    """
    parent = parent_of(config)
    if parent is None:
        return None
    from chex_tune.core.compact import load_compact

    return load_compact(parent["path"], map_location=map_location)


def has_constants(config: Mapping) -> bool:
    """Whether ``config`` came from a chex-tune space (it carries the constants) rather than being plain settings."""
    return FIXED_KEY in config or SEARCHED_KEY in config


def settings_in(config: Mapping) -> dict:
    """The settings a trial config holds: ``chex_fixed``, then the names in ``chex_searched``.

    A config without those constants is returned whole (plain settings).
    """
    if not has_constants(config):
        return dict(config)
    searched = searched_names(config)
    missing = [name for name in searched if name not in config]
    if missing:
        raise ValueError(f"the trial config lacks the searched setting(s) {missing} that {SEARCHED_KEY} lists")
    return {**dict(config.get(FIXED_KEY) or {}), **{name: config[name] for name in searched}}


def own_entries(config: Mapping) -> dict:
    """The user's own entries of a trial config (not chex-tune's constants or settings), nested dicts as ``a/b``."""
    return _flatten({k: v for k, v in config.items() if k not in RESERVED_KEYS and k not in searched_names(config)})


def _flatten(values: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out
