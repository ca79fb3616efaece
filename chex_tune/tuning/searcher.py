"""The Optuna side of a sweep: which sampler proposes trials, and the guards between it, the trials and Ray Tune.

``OPTUNA_SAMPLERS`` names Optuna's samplers (``--optuna-sampler``); CHEX's own regrowth samplers are another
thing (``sampler`` in a space, ``chex_tune.core.regrow``). ``new_searcher`` builds the OptunaSearch of a sweep,
its study stored in the sweep's ``optuna.db`` under the sweep's name, wrapped in ``ObjectiveGuard`` (a trial
without its objectives fails alone; with ``--max-drop``, each finished trial's Optuna constraint);
``ObjectiveCheck`` stops the whole sweep when the first trial to finish lacks one (a misspelt objective would fail
every trial after training it to the end).
"""

from __future__ import annotations

import difflib
import logging
import time
import warnings
from collections.abc import Callable

from ray import tune
from ray.tune.search import Searcher

from chex_tune.tuning.objectives import missing_objectives
from chex_tune.tuning.protocol import FINAL_KEY
from chex_tune.tuning.reference import CONSTRAINT

logger = logging.getLogger(__name__)

RAY_TRIAL_ATTR, MLFLOW_RUN_ATTR = "ray_trial_id", "mlflow_run_id"  # user attributes of the sweep's Optuna trials
LINK_WAIT_S = 10.0  # how long a trial's end waits for its MLflow run to exist


def _tpe(*, seed: int, trials: int, concurrent: int):
    """Random start-up trials first, then multivariate TPE (multi-objective capable)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)), multivariate=True,
                                      constant_liar=concurrent > 1)


def _nsga2(*, seed: int, trials: int, concurrent: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, 2 * concurrent))


def _random(*, seed: int, trials: int, concurrent: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


OPTUNA_SAMPLERS: dict[str, Callable] = {"tpe": _tpe, "nsga2": _nsga2, "random": _random}


def make_sampler(name: str, *, seed: int, trials: int, concurrent: int):
    if name not in OPTUNA_SAMPLERS:
        raise ValueError(f"unknown Optuna sampler {name!r}; choose one of: {', '.join(OPTUNA_SAMPLERS)}")
    return OPTUNA_SAMPLERS[name](seed=seed, trials=trials, concurrent=concurrent)


def new_searcher(storage_url: str, study_name: str, objectives, *, sampler, optuna_space=None,
                 initial_points=None, early_stop=None, run_id=None, lineage=None, max_drop=None) -> ObjectiveGuard:
    """OptunaSearch over ``optuna_space`` (None: the Ray domains of the param_space), guarded; ``max_drop`` (a
    ``MaxDrop``): each finished trial's distance beyond it is its Optuna constraint."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=optuna_space, metric=[o.name for o in objectives],
                            mode=[o.mode for o in objectives], storage=optuna.storages.RDBStorage(storage_url),
                            study_name=study_name, points_to_evaluate=initial_points, sampler=sampler)
    return ObjectiveGuard(searcher, objectives, early_stop=early_stop, run_id=run_id, lineage=lineage,
                          max_drop=max_drop)


class ObjectiveGuard(Searcher):
    """Wraps the Optuna searcher so a trial that never reports an objective fails alone.

    Ray checks every intermediate result for all the searcher's metrics and stops the whole experiment
    when one is missing; objectives often arrive only in the final report. This wrapper hides the
    metrics from that check, passes intermediate results on only when they hold them, and tells Optuna
    FAIL for a trial whose final report lacks one (the MLflow callback records why). A trial that
    ``early_stop`` stopped is told as PRUNED (Optuna's state for it), so its partial values never enter
    the front the sampler learns from. It also names the study's objectives and gives each Optuna trial its Ray
    trial id and MLflow run id as user attributes (optuna-dashboard shows them).

    With ``max_drop`` (a ``MaxDrop``: ``--max-drop`` against the dense val_acc) every trial that finishes gets the
    constraint ``max_drop``: the points its val_acc falls beyond the rule (> 0: infeasible). It is set before the
    trial is told, as Optuna 5 asks (``Trial.set_constraint``; the samplers' ``constraints_func`` is deprecated
    there): TPE and NSGA-II read ``trial.constraints`` and learn from the feasible trials first.
    """

    def __init__(self, searcher: Searcher, objectives, *, early_stop=None,
                 run_id: Callable[[str], str | None] | None = None, lineage=None, max_drop=None):
        self.searcher = searcher
        self.max_drop = max_drop
        self.lineage = lineage  # an inheriting sweep's: each suggestion gets its parent (tuning/lineage.py)
        self.objectives = tuple(o.name for o in objectives)
        self.early_stop = early_stop
        self.run_id = run_id  # Ray trial id -> its MLflow run id
        super().__init__(metric=None, mode=None)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        accepted = self.searcher.set_search_properties(metric, mode, config, **spec)
        study = getattr(self.searcher, "_ot_study", None)  # OptunaSearch's study, once set up
        if study is not None and len(study.directions) == len(self.objectives):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks set_metric_names experimental
                study.set_metric_names(list(self.objectives))
        return accepted

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        config = self.searcher.suggest(trial_id)
        trial = self._optuna_trial(trial_id)
        if trial is not None:
            set_user_attr(trial, RAY_TRIAL_ATTR, trial_id)
        if self.lineage is not None and isinstance(config, dict):
            config = self.lineage.with_parent(config)
        return config

    def _optuna_trial(self, trial_id: str):
        return getattr(self.searcher, "_ot_trials", {}).get(trial_id)  # OptunaSearch's trial for a Ray trial

    def _link_run(self, trial_id: str) -> None:
        """The trial's MLflow run id as an Optuna user attribute (set before the trial ends: then it is frozen)."""
        trial = self._optuna_trial(trial_id)
        if trial is None or self.run_id is None:
            return
        run_id = None
        deadline = time.monotonic() + LINK_WAIT_S
        while run_id is None:  # the MLflow callback creates runs on its own writer thread: a short trial can
            try:               # end before its run exists
                run_id = self.run_id(trial_id)
            except Exception as exc:  # noqa: BLE001 - a link is a convenience; the sweep goes on without it
                logger.debug("no MLflow run id for trial %s: %s", trial_id, exc)
                return
            if run_id is None:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
        set_user_attr(trial, MLFLOW_RUN_ATTR, run_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result and not missing_objectives(result, self.objectives):
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self._link_run(trial_id)
        epoch = self.early_stop.stopped_at(trial_id) if self.early_stop is not None else None
        if epoch is not None and not error:
            trial = self._optuna_trial(trial_id)
            if trial is not None:
                set_user_attr(trial, "stopped_at_epoch", epoch)
            self.searcher.on_trial_complete(trial_id, result=None, error=False)  # OptunaSearch: PRUNED
            return
        missing = missing_objectives(result or {}, self.objectives)
        if not error and missing:
            logger.warning("trial %s ended without reporting objective(s) %s: recorded as failed", trial_id, missing)
            result, error = None, True
        if not error and result:
            self._constrain(trial_id, result)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def _constrain(self, trial_id: str, result: dict) -> None:
        """The trial's --max-drop constraint, from its final val_acc (none without a rule or a val_acc)."""
        from chex_tune.train.metrics import VAL_ACC

        trial = self._optuna_trial(trial_id)
        value = result.get(VAL_ACC)
        if self.max_drop is None or trial is None or not isinstance(value, (int, float)):
            return
        set_constraint(trial, CONSTRAINT, self.max_drop.excess(value))

    def add_evaluated_point(self, *args, **kwargs):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict:  # a wrapper's own state; Ray saves the wrapped searcher separately
        return {"objectives": self.objectives, "max_drop": self.max_drop}

    def set_state(self, state: dict) -> None:
        self.objectives = tuple(state["objectives"])
        self.max_drop = state.get("max_drop")


def set_user_attr(trial, key: str, value) -> None:
    """An Optuna user attribute, unless the trial has ended: a trial re-run after a killed driver may already be
    finished in the study (told before the kill; Ray's saved state is older), and its record stays as it was."""
    import optuna

    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.debug("Optuna trial %s already finished; %s not set", trial.number, key)


def set_constraint(trial, key: str, value: float) -> None:
    """An Optuna constraint, unless the trial has ended (as ``set_user_attr``)."""
    import optuna

    try:
        trial.set_constraint(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.debug("Optuna trial %s already finished; constraint %s not set", trial.number, key)


class ObjectiveCheck(tune.Stopper):
    """Stops the sweep (``error`` says why) when the first trial to finish lacks an objective.

    Objectives may arrive only in a trial's last report, so that is the first report that must hold them all: a
    chex-tune final report, or for any other trainable the last result Ray hands on when its function returns
    (marked ``done``); a per-epoch report missing one that closely matches a reported name (``val_accuracy``
    beside ``val_acc``) gets a warning at once. After the first, trials are judged one by one (``ObjectiveGuard``).
    """

    def __init__(self, objectives):
        self.objectives = tuple(o.name for o in objectives)
        self.error: str | None = None
        self.trial_id: str | None = None  # the trial that stopped the sweep
        self.judged = False  # a final report was seen: later ones are judged one by one
        self.warned = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        from chex_tune.tuning.track.ray_callback import trainable_metrics

        final = bool(result.get(FINAL_KEY) or result.get("done"))  # "done": Ray's copy of a returned trial's last
        first_final, self.judged = final and not self.judged, self.judged or final
        missing = missing_objectives(result, self.objectives)
        if not missing or self.error is not None or (final and not first_final):
            return False
        reported = sorted(trainable_metrics(result))
        hints = {name: difflib.get_close_matches(name, reported, n=1, cutoff=0.6) for name in missing}
        said = "; ".join(f"{name!r} (did you mean {hint[0]!r}?)" if hint else repr(name)
                         for name, hint in hints.items())
        if first_final:
            self.trial_id = trial_id
            self.error = (f"the first trial to finish ({trial_id}) never reported objective(s) {said}; it reported: "
                          f"{', '.join(reported) or '(no metrics)'}. Fix the objectives (or what the trainable "
                          "reports); the sweep was stopped rather than train every trial for nothing")
        elif not self.warned and any(hints.values()):
            self.warned = True
            logger.warning("objective(s) %s not in trial %s's first report; if they are not reported at the end "
                           "either, the sweep stops there", said, trial_id)
        return False

    def stop_all(self) -> bool:
        return self.error is not None
