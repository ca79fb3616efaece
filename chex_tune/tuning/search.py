"""Sweeps: Ray Tune runs the trials of any trainable, Optuna proposes them (any objectives), MLflow records them.

    result = run_sweep(train_fn, param_space={"lr": tune.loguniform(1e-3, 0.1)}, chex_space=ChexSpace(),
                       objectives="val_acc:max,macs:min", options=SweepOptions(trials=8))
    result = run_space_sweep(SearchSpace.load("search_spaces/fashion_mnist_resnet18.yaml"), SweepOptions())

``run_sweep`` takes any Ray Tune trainable (usually a function that trains with a ``ChexReporter``);
``run_space_sweep`` is its client for the YAML spaces, with chex-tune's own training loop as the
trainable. What every sweep gets: one MLflow parent run and a child run per trial (see tracking.py),
Optuna's multi-objective proposals stored in ``optuna.db``, Ray's experiment state under ``ray/`` (from
which ``resume`` continues the experiment's latest sweep without re-running finished trials), failures
isolated to their trial, and the Pareto tags at the end. Ray is started only when it is not running
already, and shut down only when this call started it. Only this process writes to MLflow and Optuna;
trials report to it through Ray.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ray.tune import Callback
from ray.tune.search import Searcher

from chex_tune.tuning.chex_space import ChexSpace, merge_spaces
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, Objective, format_metric, parse_objectives
from chex_tune.tuning.pareto_asha import CHEX_RUNG_METRICS, DEFAULT_ETA, DEFAULT_GRACE, ParetoAsha, check_rule
from chex_tune.tuning.runs import PARENT_TAG, ROLE_TAG, SWEEP_TAG, tag_front, trial_rows
from chex_tune.tuning.space import OBJECTIVE_METRICS, SearchSpace
from chex_tune.tuning.sweep_store import prepare_store
from chex_tune.tuning.tracking import SweepRecorder, artifact_location_for, time_stamp

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "random")
RAY_TRIAL_ATTR, MLFLOW_RUN_ATTR = "ray_trial_id", "mlflow_run_id"  # user attributes of the sweep's Optuna trials
LINK_WAIT_S = 10.0  # how long a trial's end waits for its MLflow run to exist


@dataclass(frozen=True)
class SweepOptions:
    trials: int = 8
    concurrent: int = 2
    epochs: int | None = None  # overrides the space's epochs (built-in trainable only)
    gpus_per_trial: float = 0.0  # fractions share one GPU between trials
    cpus_per_trial: float | None = None  # default: this machine's cores / concurrent
    sampler: str = "tpe"
    objectives: str | None = None  # overrides the space's (built-in trainable only)
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray instance (unless Ray already runs)
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite under ``store``
    experiment: str | None = None  # default: the space file's (or the trainable's) name
    resume: bool = False
    seed: int = 0
    store: str = "mlflow"
    early_stop: bool = False  # Pareto-ASHA: stop trials whose objectives fall behind at a rung (pareto_asha.py)
    grace: int = DEFAULT_GRACE  # epochs before the first rung
    eta: int = DEFAULT_ETA  # keep the best 1/eta of each rung

    def __post_init__(self) -> None:
        for name in ("trials", "concurrent"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value!r}")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"--epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.gpus_per_trial, (int, float)) and self.gpus_per_trial >= 0):
            raise ValueError(f"--gpus-per-trial must be >= 0 (fractions share a GPU), got {self.gpus_per_trial!r}")
        if self.cpus_per_trial is not None and not self.cpus_per_trial > 0:
            raise ValueError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown --sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        check_rule(self.grace, self.eta, prefix="--")


@dataclass
class SweepResult:
    experiment: str
    sweep: str
    parent_run_id: str
    tracking_uri: str
    objectives: tuple[Objective, ...]
    rows: list[dict]  # one per trial run: run_id, status, params, metrics, rank (0 = Pareto front), stopped_at
    interrupted: bool = False
    importance: dict | None = None  # objective -> {searched parameter: importance}, from Optuna's evaluator

    @property
    def front(self) -> list[dict]:
        return [row for row in self.rows if row["rank"] == 0]

    @property
    def stopped(self) -> list[dict]:
        """Trials the early-stopping scheduler stopped (MLflow status KILLED, tag chex.stopped_at_epoch)."""
        return [row for row in self.rows if row.get("stopped_at") is not None]


def make_sampler(name: str, *, seed: int, trials: int, concurrent: int):
    import optuna

    if name == "tpe":  # random start-up trials first, then TPE (multi-objective capable)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)),
                                          multivariate=True, constant_liar=concurrent > 1)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, 2 * concurrent))
    return optuna.samplers.RandomSampler(seed=seed)


# ------------------------------------------------------------------------------------ the entry points
def run_sweep(trainable, options: SweepOptions | None = None, *, param_space: Mapping | None = None,
              chex_space: ChexSpace | None = None, objectives=None,
              initial_points: list[dict] | None = None, log: Callable[[str], None] | None = None) -> SweepResult:
    """A multi-objective sweep of ``trainable`` (any Ray Tune trainable) over ``param_space`` and ``chex_space``.

    objectives: any metrics the trainable reports, each with a direction (``"val_map:max,macs:min"``; default
    ``options.objectives``, else ``val_acc:max,macs:min``); ``options.epochs`` is the built-in trainable's only;
    initial_points: configurations Optuna tries first; log: where progress lines go (default: logging).
    A ``SearchSpace`` in place of a trainable runs the built-in loop on it (``run_space_sweep``).
    """
    if isinstance(trainable, SearchSpace):
        return run_space_sweep(trainable, options or SweepOptions(), log=log)
    if not callable(trainable):
        raise ValueError(f"trainable must be a Ray Tune trainable (a function taking the trial's config, or a "
                         f"Trainable class), got {type(trainable).__name__}")
    options = options or SweepOptions()
    space = merge_spaces(param_space or {}, chex_space.ray() if chex_space is not None else {})
    name = getattr(trainable, "__name__", type(trainable).__name__)
    objectives = parse_objectives(objectives or options.objectives or DEFAULT_OBJECTIVES)
    return _sweep(trainable, options, param_space=space, objectives=objectives,
                  searched=domain_keys(space), experiment=options.experiment or name, optuna_space=None,
                  initial_points=initial_points, description={"chex.trainable": _qualified(trainable)}, log=log)


def run_space_sweep(space: SearchSpace, options: SweepOptions, *,
                    log: Callable[[str], None] | None = None) -> SweepResult:
    """The YAML/CLI sweep: chex-tune's own training loop on ``space``'s settings."""
    from chex_tune.tuning.trainable import builtin_constants, run_trial

    objectives = parse_objectives(options.objectives, allowed=OBJECTIVE_METRICS) if options.objectives \
        else space.objectives
    cpus = _cpus_per_trial(options)
    constants = {} if options.resume else builtin_constants(
        space, epochs=options.epochs, device="cuda" if options.gpus_per_trial > 0 else "cpu", threads=int(cpus))
    epochs = options.epochs or space.fixed.get("epochs")
    return _sweep(run_trial, options, param_space=constants, objectives=objectives, searched=sorted(space.params),
                  experiment=options.experiment or pathlib.Path(space.source).stem,
                  optuna_space=None if options.resume else space.optuna_distributions(),
                  initial_points=None, description={"chex.space": str(space.source)}, log=log,
                  space_file=space.to_dict(), epochs=epochs)


def _cpus_per_trial(options: SweepOptions) -> float:
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    return options.cpus_per_trial or (1.0 if address else max(1.0, (os.cpu_count() or 1) // options.concurrent))


def _qualified(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def domain_keys(space: Mapping, prefix: str = "") -> list[str]:
    """Names of the sampled entries of a Ray ``param_space`` (nested dicts as ``a/b``, like Ray flattens them)."""
    from ray.tune.search.sample import Domain

    keys = []
    for key, value in space.items():
        if isinstance(value, Domain):
            keys.append(f"{prefix}{key}")
        elif isinstance(value, Mapping):
            keys += domain_keys(value, f"{prefix}{key}/")
    return sorted(keys)


# ------------------------------------------------------------------------------------ one sweep
def _sweep(trainable, options: SweepOptions, *, param_space: dict, objectives, searched, experiment: str,
           optuna_space, initial_points, description: dict, log, space_file: dict | None = None,
           epochs: int | None = None) -> SweepResult:
    import ray
    from ray import tune

    from chex_tune.tuning.ray_callback import RayMlflowCallback

    log = log or logger.info
    store, tracking_uri = prepare_store(options.store, options.tracking_uri)
    recorder = SweepRecorder(tracking_uri, experiment, objectives=objectives,
                             artifact_location=artifact_location_for(tracking_uri))
    ray_root = store / "ray"
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    cpus = _cpus_per_trial(options)
    early_stop = ParetoAsha(objectives, grace=options.grace, eta=options.eta, max_t=epochs,
                            rung_metrics=CHEX_RUNG_METRICS if "macs" in {o.name for o in objectives} else None) \
        if options.early_stop else None
    if options.resume:
        recorder.experiment_id = _experiment_id(recorder)
        recorder.sweep, recorder.parent_run_id = latest_sweep(recorder.client, recorder.experiment_id, experiment,
                                                              ray_root)
    else:
        recorder.sweep = f"{experiment}-{time_stamp()}"
    started_ray = not ray.is_initialized()
    if started_ray:  # a user's own Ray (a notebook, a cluster connection) is used as it is
        ray.init(address=address, num_cpus=None if address else os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        resources = tune.with_resources(trainable, {"cpu": cpus, "gpu": options.gpus_per_trial})
        if options.resume:
            recorder.client.update_run(recorder.parent_run_id, status="RUNNING")
            log(f"resuming sweep {recorder.sweep} (MLflow parent run {recorder.parent_run_id})")
            tuner = tune.Tuner.restore(str(ray_root / recorder.sweep), resources, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            settings = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("resume", "tracking_uri")}
            recorder.open(params=settings, tags=description)
            if space_file is not None:
                recorder.client.log_dict(recorder.parent_run_id, space_file, "search_space.yaml")
            callback = RayMlflowCallback(experiment, tracking_uri=tracking_uri, objectives=objectives,
                                         searched=searched, sweep=recorder.sweep,
                                         parent_run_id=recorder.parent_run_id, early_stop=early_stop)
            tuner = new_tuner(resources, param_space, options, objectives, sweep=recorder.sweep, ray_root=ray_root,
                              store=store, optuna_space=optuna_space, initial_points=initial_points,
                              callbacks=[callback, ProgressCallback(options.trials, objectives, log, early_stop)],
                              early_stop=early_stop, run_id=recorder.run_id)
            stopping = (f"; early stopping: Pareto-ASHA, rungs at epochs "
                        f"{', '.join(map(str, early_stop.milestones(epochs or 10 ** 6)[:6]))}, keeping 1/{options.eta}"
                        if early_stop is not None else "")
            log(f"sweep {recorder.sweep}: {options.trials} trials, {options.concurrent} at a time, {cpus:g} CPU "
                f"{f'+ {options.gpus_per_trial:g} GPU ' if options.gpus_per_trial else ''}each; "
                f"objectives {', '.join(map(str, objectives))}{stopping}; MLflow {tracking_uri}, "
                f"experiment {experiment!r}")
        grid = tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    settle_runs(recorder, grid)
    client = recorder.client
    rows = trial_rows(client, recorder.experiment_id, [recorder.parent_run_id], objectives)
    expected = int(client.get_run(recorder.parent_run_id).data.params.get("trials", options.trials))
    done = sum(row["status"] in ("FINISHED", "FAILED") or row.get("stopped_at") is not None for row in rows)
    interrupted = done < expected
    if not interrupted:
        fail_orphans(store / "optuna.db", recorder.sweep)
        retired = retire_orphan_runs(recorder, rows)
        rows = [row for row in rows if row["run_id"] not in retired]  # KILLED rows: the others' ranks stay
    tag_front(client, rows)
    importance = None
    if not interrupted:
        from chex_tune.tuning.importance import log_importance, searched_importance

        importance = searched_importance(store / "optuna.db", recorder.sweep, objectives)
        if importance:
            log_importance(client, recorder.parent_run_id, importance, log)
    client.set_terminated(recorder.parent_run_id, "KILLED" if interrupted else "FINISHED")
    return SweepResult(experiment, recorder.sweep, recorder.parent_run_id, tracking_uri, tuple(objectives), rows,
                       interrupted, importance)


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

    from chex_tune.tuning.ray_callback import reported_params, trainable_metrics
    from chex_tune.tuning.reporter import FINAL_KEY

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


def retire_orphan_runs(recorder: SweepRecorder, rows: list[dict]) -> set[str]:
    """Delete (MLflow's soft delete, tagged ``chex.orphan``) the KILLED runs left in a complete sweep: attempts
    of trials that Ray's saved state lost (its driver died or the disk filled before Ray saved them), whose
    places new trials took on resume. Without this the sweep would show N+1 runs for N trials. ``rows``: the
    sweep's trial rows (``trial_rows``); returns the deleted run ids."""
    orphans = {row["run_id"] for row in rows if row["status"] == "KILLED" and row["stopped_at"] is None}
    for run_id in orphans:
        recorder.client.set_tag(run_id, "chex.orphan", "true")
        recorder.client.delete_run(run_id)
    if orphans:
        logger.info("%d interrupted trial run(s) that Ray did not resume (new trials took their places) deleted "
                    "from MLflow (restorable: tag chex.orphan)", len(orphans))
    return orphans


def fail_orphans(optuna_db: pathlib.Path, study_name: str) -> int:
    """Tell FAIL for the study's trials still RUNNING after a complete sweep (asked by a driver that was killed
    before Ray saved the searcher's state: no trial will ever report to them); returns how many."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{optuna_db}")
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if orphans:
        logger.info("Optuna study %s: %d trial(s) left RUNNING by an interrupted driver marked FAIL",
                    study_name, len(orphans))
    return len(orphans)


def _experiment_id(recorder: SweepRecorder) -> str:
    experiment = recorder.client.get_experiment_by_name(recorder.experiment)
    if experiment is None:
        raise ValueError(f"--resume: no experiment {recorder.experiment!r} in {recorder.tracking_uri}")
    return experiment.experiment_id


def new_tuner(trainable, param_space: dict, options: SweepOptions, objectives, *, sweep: str, ray_root, store,
              optuna_space, initial_points, callbacks, early_stop: ParetoAsha | None = None, run_id=None):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{store / 'optuna.db'}")
    searcher = OptunaSearch(space=optuna_space, metric=[o.name for o in objectives],
                            mode=[o.mode for o in objectives], storage=storage, study_name=sweep,
                            points_to_evaluate=initial_points,
                            sampler=make_sampler(options.sampler, seed=options.seed, trials=options.trials,
                                                 concurrent=options.concurrent))
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=ObjectiveGuard(searcher, objectives, early_stop=early_stop,
                                                              run_id=run_id),
                                    scheduler=early_stop, num_samples=options.trials,
                                    max_concurrent_trials=options.concurrent,
                                    reuse_actors=True),  # a trial's worker keeps torch/timm imported
        run_config=tune.RunConfig(name=sweep, storage_path=str(ray_root), verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def latest_sweep(client, experiment_id: str, experiment: str, ray_root: pathlib.Path) -> tuple[str, str]:
    """The experiment's most recent sweep that Ray can restore, and its MLflow parent run."""
    from ray import tune

    parents = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                 order_by=["attributes.start_time DESC"])
    for parent in parents:
        sweep = parent.data.tags.get(SWEEP_TAG, "")
        if sweep and tune.Tuner.can_restore(str(ray_root / sweep)):
            return sweep, parent.info.run_id
    raise ValueError(f"--resume: no sweep of experiment {experiment!r} to resume under {ray_root} "
                     "(start one without --resume)")


# ------------------------------------------------------------------------------------ Ray plumbing
class ObjectiveGuard(Searcher):
    """Wraps the Optuna searcher so a trial that never reports an objective fails alone.

    Ray checks every intermediate result for all the searcher's metrics and stops the whole experiment
    when one is missing; objectives often arrive only in the final report. This wrapper hides the
    metrics from that check, passes intermediate results on only when they hold them, and tells Optuna
    FAIL for a trial whose final report lacks one (the MLflow callback records why). A trial that
    ``early_stop`` stopped is told as PRUNED (Optuna's state for it), so its partial values never enter
    the front the sampler learns from. It also names the study's objectives and gives each Optuna trial its Ray
    trial id and MLflow run id as user attributes (optuna-dashboard shows them).
    """

    def __init__(self, searcher: Searcher, objectives, *, early_stop: ParetoAsha | None = None,
                 run_id: Callable[[str], str | None] | None = None):
        self.searcher = searcher
        self.objectives = tuple(o.name for o in objectives)
        self.early_stop = early_stop
        self.run_id = run_id  # Ray trial id -> its MLflow run id
        super().__init__(metric=None, mode=None)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        accepted = self.searcher.set_search_properties(metric, mode, config, **spec)
        study = getattr(self.searcher, "_ot_study", None)  # OptunaSearch's study, once set up
        if study is not None and len(study.directions) == len(self.objectives):
            import warnings

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
            _set_user_attr(trial, RAY_TRIAL_ATTR, trial_id)
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
        _set_user_attr(trial, MLFLOW_RUN_ATTR, run_id)

    def _complete(self, result) -> bool:
        return bool(result) and all(isinstance(result.get(name), (int, float)) and not isinstance(
            result.get(name), bool) for name in self.objectives)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._complete(result):
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self._link_run(trial_id)
        epoch = self.early_stop.stopped_at(trial_id) if self.early_stop is not None else None
        if epoch is not None and not error:
            trial = self._optuna_trial(trial_id)
            if trial is not None:
                _set_user_attr(trial, "stopped_at_epoch", epoch)
            self.searcher.on_trial_complete(trial_id, result=None, error=False)  # OptunaSearch: PRUNED
            return
        if not error and not self._complete(result):
            missing = [n for n in self.objectives if n not in (result or {})]
            logger.warning("trial %s ended without reporting objective(s) %s: recorded as failed", trial_id, missing)
            result, error = None, True
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args, **kwargs):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict:  # a wrapper's own state; Ray saves the wrapped searcher separately
        return {"objectives": self.objectives}

    def set_state(self, state: dict) -> None:
        self.objectives = tuple(state["objectives"])


def _planned_epochs(trial) -> int | None:
    """The epochs a trial will train, when its config says (the built-in trainable's does)."""
    return (trial.config or {}).get("chex_fixed", {}).get("epochs")


def _set_user_attr(trial, key: str, value) -> None:
    """An Optuna user attribute, unless the trial has ended: a trial re-run after a killed driver may already be
    finished in the study (told before the kill; Ray's saved state is older), and its record stays as it was."""
    import optuna

    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.debug("Optuna trial %s already finished; %s not set", trial.number, key)


class ProgressCallback(Callback):
    """Live progress (Ray's own tables are off: verbose=0): a line when a trial starts, after each of its
    epochs (with the sweep's ETA) and when it ends.

    The ETA extrapolates the sweep's wall time per trial-epoch so far to the trial-epochs left; it is known
    once a trial's config says how many epochs it runs (the built-in trainable's does), else it is
    extrapolated from finished trials. Epochs that early stopping saved are taken off; trials it may still
    stop are not, so with ``early_stop`` the ETA is an upper bound.
    """

    def __init__(self, total: int, objectives, log, early_stop: ParetoAsha | None = None):
        self.total, self.objectives, self.log, self.done = total, objectives, log, 0
        self.early_stop = early_stop
        self.started_at = time.monotonic()
        self.numbers: dict[str, int] = {}  # trial id -> 1, 2, ... in start order
        self.epochs_done = 0
        self.epochs_saved = 0  # by early stopping

    def __getstate__(self) -> dict:  # a bound logger method pickles; a user's lambda may not: fall back to logging
        import pickle

        try:
            pickle.dumps(self.log)
            return dict(self.__dict__)
        except Exception:  # noqa: BLE001
            return {**self.__dict__, "log": logger.info}

    def _number(self, trial) -> int:
        return self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)

    def on_trial_start(self, iteration, trials, trial, **info):
        config = {k: v for k, v in (trial.config or {}).items() if not k.startswith("chex_")}
        shown = ", ".join(f"{k}={format_metric(k, v) if isinstance(v, float) else v}" for k, v in config.items())
        self.log(f"trial {self._number(trial)}/{self.total} started{f': {shown}' if shown else ''}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from chex_tune.tuning.reporter import FINAL_KEY

        epoch = result.get("epoch")
        if result.get(FINAL_KEY) or result.get("done") or not isinstance(epoch, (int, float)):
            return  # the final report, and Ray's copy of the last one when a trial ends, are no new epochs
        self.epochs_done += 1
        epochs = _planned_epochs(trial)
        shown = ", ".join(f"{o.name} {format_metric(o.name, result[o.name])}" for o in self.objectives
                          if o.name in result)
        running = sum(t.status == "RUNNING" for t in trials)
        self.log(f"trial {self._number(trial)}/{self.total} epoch {epoch:g}{f'/{epochs}' if epochs else ''}"
                 f"{f': {shown}' if shown else ''} ({running} running, {self.done} done{self._eta(epochs)})")

    def _eta(self, epochs) -> str:
        elapsed = time.monotonic() - self.started_at
        if epochs:
            left = self.total * epochs - self.epochs_done - self.epochs_saved
            seconds = elapsed / max(1, self.epochs_done) * max(0, left)
        elif self.done:
            seconds = elapsed / self.done * (self.total - self.done)
        else:
            return ""
        return f", about {seconds / 60:.0f} min left" if seconds >= 90 else f", about {seconds:.0f} s left"

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        metrics = trial.last_result or {}
        missing = [o.name for o in self.objectives if o.name not in metrics]
        name = f"trial {self._number(trial)}/{self.total}"
        stopped = self.early_stop.stopped_at(trial.trial_id) if self.early_stop is not None else None
        if stopped is not None:
            epochs = _planned_epochs(trial)
            self.epochs_saved += max(0, (epochs or stopped) - stopped)
            shown = ", ".join(f"{o.name} {format_metric(o.name, metrics[o.name])}" for o in self.objectives
                              if o.name in metrics)
            self.log(f"{name} stopped at epoch {stopped}, behind the front of its rung ({shown}; "
                     f"{self.done} of {self.total} done)")
            return
        if missing:
            self.log(f"{name} FAILED: objective(s) {missing} never reported ({self.done} done)")
            return
        shown = ", ".join(f"{o.name} {format_metric(o.name, metrics.get(o.name))}" for o in self.objectives)
        seconds = metrics.get("train_seconds", metrics.get("time_total_s", 0))
        self.log(f"{name} done: {shown} ({seconds:.0f} s; {self.done} of {self.total} done)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        from chex_tune.tuning.tracking import last_line, trial_error_text

        self.log(f"trial {self._number(trial)}/{self.total} FAILED: {last_line(trial_error_text(trial))} "
                 f"(traceback: error.txt of its MLflow run; {self.done} of {self.total} done)")
