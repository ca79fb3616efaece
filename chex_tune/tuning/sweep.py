"""Sweeps: Ray Tune runs the trials, Optuna proposes them (any objectives), MLflow records them.

    result = run_sweep(SearchSpace.load("fashion_mnist_resnet18"), SweepOptions(trials=8))   # the built-in loop
    result = run_sweep(train_fn, SweepOptions(trials=8), param_space={"lr": tune.loguniform(1e-3, 0.1)},
                       chex_space=ChexSpace(), objectives="val_acc:max,macs:min")              # your trainable
    print(result)                                                                              # the front first

``run_sweep`` takes any Ray Tune trainable (usually a function that trains with a ``ChexReporter``) or a
``SearchSpace`` (chex-tune's own training loop on its settings): both take the same path. What every sweep
gets: one MLflow parent run and a child run per trial (``track/``), Optuna's multi-objective proposals stored
in ``optuna.db``, Ray's experiment state under ``ray/`` (``resume.py`` continues from it), failures isolated to
their trial, progress through ``logging``, and the Pareto tags at the end. Ray is started only when it is not
running already, and shut down only when this call started it. Only this process writes to MLflow and Optuna;
trials report to it through Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from chex_tune.train.metrics import BUILTIN_OBJECTIVES
from chex_tune.tuning.lineage import Lineage, check_inheritance, ladder_points
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, Objective, parse_objectives
from chex_tune.tuning.options import TRIAL_DRIVER_CPUS, SweepOptions
from chex_tune.tuning.pareto_asha import CHEX_RUNG_METRICS, ParetoAsha
from chex_tune.tuning.protocol import FIXED_KEY, WORKERS_KEY, TrialRow
from chex_tune.tuning.reference import MaxDrop
from chex_tune.tuning.searcher import ObjectiveCheck
from chex_tune.tuning.space import SearchSpace, merge_spaces
from chex_tune.tuning.workers import Workers, on_workers

__all__ = ["SweepOptions", "SweepResult", "run_sweep", "run_space_sweep"]

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    experiment: str
    sweep: str
    parent_run_id: str
    tracking_uri: str
    objectives: tuple[Objective, ...]
    rows: list[TrialRow]  # every trial run, ranked (rank 0: the Pareto front)
    interrupted: bool = False
    importance: dict | None = None  # objective -> {searched parameter: importance}, from Optuna's evaluator
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> its trial's files (compact.pt, ...)

    @property
    def front(self) -> list[TrialRow]:
        return [row for row in self.rows if row.rank == 0]

    @property
    def stopped(self) -> list[TrialRow]:
        """Trials the early-stopping scheduler stopped (MLflow status KILLED, tag chex.stopped_at_epoch)."""
        return [row for row in self.rows if row.stopped_at is not None]

    def __str__(self) -> str:
        from chex_tune.tuning.tables import trials_table

        state = "interrupted" if self.interrupted else "finished"
        return (f"sweep {self.sweep} ({state}; MLflow experiment {self.experiment!r}, parent run {self.parent_run_id},"
                f" {self.tracking_uri})\n{trials_table(self.rows, self.objectives)}")

    def __repr__(self) -> str:
        return (f"SweepResult(sweep={self.sweep!r}, trials={len(self.rows)}, front={len(self.front)}, "
                f"interrupted={self.interrupted})")


@dataclass
class Plan:
    """What differs between a sweep of a user's trainable and one of the built-in loop; the rest is shared."""

    trainable: Callable
    param_space: dict
    objectives: tuple[Objective, ...]
    searched: list[str]
    experiment: str
    tags: dict
    optuna_space: dict | None = None  # None: Optuna reads the Ray domains of param_space
    initial_points: list[dict] | None = None
    space_file: dict | None = None  # the built-in loop's space, logged on the parent run
    workers: int = 1  # data-parallel workers per trial
    epochs: int | None = None  # a trial's epochs, when known (progress ETA, early-stopping rungs)
    max_drop: MaxDrop | None = None  # --max-drop against the trained start's val_acc (evaluated once, here)
    lineage: Lineage | None = None  # an inheriting sweep's or a family's: the finished trials a trial may start from
    searcher: Callable | None = None  # recorder -> the Ray searcher of fixed trials (a family's); None: Optuna's
    params: dict | None = None  # the parent run's params (default: the sweep's options)
    complete: Callable[[list[TrialRow], int], bool] | None = None  # (rows, trials) -> ended; default: all ended


# ------------------------------------------------------------------------------------ the entry point
def run_sweep(trainable, options: SweepOptions | None = None, *, param_space: Mapping | None = None,
              chex_space: SearchSpace | None = None, objectives=None, initial_points: list[dict] | None = None,
              log: Callable[[str], None] | None = None) -> SweepResult:
    """A multi-objective sweep of ``trainable`` (any Ray Tune trainable, or a ``SearchSpace`` for the built-in loop).

    param_space: your own Ray Tune entries; chex_space: the CHEX settings to search (``ChexSpace(...)``);
    objectives: any metrics the trainable reports, each with a direction (``"val_map:max,macs:min"``; default
    ``options.objectives``, else the space's, else ``val_acc:max,macs:min``); initial_points: configurations
    Optuna tries first; log: where progress lines go (default: ``logging``, logger ``chex_tune.tuning.sweep``).
    A trial that misses an objective fails alone; when the first trial to finish misses one, the sweep stops with
    an error naming it and what the trial did report.
    """
    options = options or SweepOptions()
    log = log or logger.info
    plan = (_builtin_plan(trainable, options, objectives) if isinstance(trainable, SearchSpace) else
            _user_plan(trainable, options, param_space, chex_space, objectives, initial_points))
    result = run_plan(plan, options, log)
    log(f"\n{result}")
    return result


def run_space_sweep(space: SearchSpace, options: SweepOptions | None = None, *, log=None) -> SweepResult:
    """``run_sweep`` of the built-in loop on ``space`` (the name the CLI and earlier releases use)."""
    return run_sweep(space, options, log=log)


def _user_plan(trainable, options, param_space, chex_space, objectives, initial_points) -> Plan:
    if not callable(trainable):
        raise ValueError(f"trainable must be a Ray Tune trainable (a function taking the trial's config, or a "
                         f"Trainable class) or a SearchSpace, got {type(trainable).__name__}")
    if options.init is not None:
        raise ValueError("--init is the built-in loop's trained start; your trainable loads its own weights before "
                         "ChexReporter (see the README's trained start)")
    if options.max_drop is not None:
        raise ValueError(f"--max-drop {options.max_drop:g} needs the dense model's val accuracy, which chex-tune reads "
                         "from the built-in loop's --init; for your trainable, leave --max-drop out and filter the "
                         "front by val_acc")
    if options.ladder:
        raise ValueError("--ladder is the built-in loop's: for your trainable, give the first trials as "
                         "initial_points= (large budgets first, so that with inherit=True they seed the later ones)")
    if options.inherit and (chex_space is None or ("macs_target" not in chex_space.params
                                                   and chex_space.fixed.get("macs_target") is None)):
        raise ValueError("inherit=True needs a MACs budget in chex_space (ChexSpace(macs_target=...)): a parent is a "
                         "finished trial with more MACs than its child's budget; the trial loads it with "
                         "parent_model(config)")
    if chex_space is not None and chex_space.non_chex_settings():
        raise ValueError(f"chex_space sets {chex_space.non_chex_settings()}, which are not CHEX settings: your "
                         "trainable reads CHEX settings only from it; put your own settings in param_space")
    space = merge_spaces(param_space or {}, chex_space.ray() if chex_space is not None else {})
    name = getattr(trainable, "__name__", type(trainable).__name__)
    workers = options.workers_per_trial or 1
    objectives = parse_objectives(objectives or options.objectives or DEFAULT_OBJECTIVES)
    accuracy = next((o.name for o in objectives if o.mode == "max"), None)
    if options.inherit and accuracy is None:
        raise ValueError(f"inherit=True ranks parents on a maximised objective (an accuracy); objectives "
                         f"{', '.join(map(str, objectives))} have none")
    lineage = Lineage(space.get(FIXED_KEY), accuracy=accuracy) if options.inherit and not options.resume else None
    return Plan(on_workers(trainable) if workers > 1 else trainable, space, objectives,
                searched=domain_keys(space), experiment=options.experiment or name, lineage=lineage,
                tags={"chex.trainable": f"{getattr(trainable, '__module__', '?')}."
                                        f"{getattr(trainable, '__qualname__', name)}"},
                initial_points=initial_points, workers=workers)


def _builtin_plan(space: SearchSpace, options: SweepOptions, objectives) -> Plan:
    from chex_tune.tuning.track.runs import resolve_init
    from chex_tune.tuning.trainable import builtin_constants, run_trial

    objectives = objectives or options.objectives
    init = options.init or space.fixed.get("init")
    if init:
        warn_from_scratch_schedule(space)
    if options.inherit:
        check_inheritance(space, init)
    if options.max_drop is not None and not init:
        raise ValueError(f"--max-drop {options.max_drop:g} needs a dense reference: give --init WEIGHTS (the trained "
                         "dense model, evaluated once before the trials start); a sweep from scratch has none")
    ladder = ladder_points(space, options.ladder) if options.ladder else None
    # the sweep's overrides of the space's run settings: the run's config (TrainConfig) is where they live
    overrides = {name: getattr(options, name) for name in ("epochs", "workers_per_trial")
                 if getattr(options, name) is not None}
    centre = space.run_config(space.midpoint(), **overrides, init=init).train
    centre.check_teacher()  # distillation without a trained start: refused before anything starts
    workers = centre.workers_per_trial
    constants = {} if options.resume else builtin_constants(
        space, overrides, device=options.device, threads=int(options.cpus()),
        init=resolve_init(init, store=options.store, tracking_uri=options.tracking_uri) if init else None)
    trainable = on_workers(run_trial) if workers > 1 else run_trial  # as a user's trainable on several workers
    max_drop = None
    if options.max_drop is not None and not options.resume:  # resumed: the searcher and parent run keep it
        from chex_tune.train.metrics import VAL_ACC
        from chex_tune.tuning.reference import dense_reference

        fixed = constants[FIXED_KEY]
        max_drop = MaxDrop(options.max_drop, dense_reference(fixed, fixed["init"])[VAL_ACC])
    lineage = Lineage(constants.get(FIXED_KEY), max_drop=max_drop) if options.inherit and not options.resume else None
    return Plan(trainable, constants, parse_objectives(objectives, allowed=BUILTIN_OBJECTIVES) if objectives
                else space.objectives, searched=list(space.searched), tags={"chex.space": str(space.source)},
                experiment=options.experiment or pathlib.Path(space.source).stem,
                optuna_space=None if options.resume else space.optuna_distributions(), space_file=space.to_dict(),
                epochs=centre.epochs, workers=workers, initial_points=ladder, max_drop=max_drop, lineage=lineage)


def warn_from_scratch_schedule(space: SearchSpace) -> None:
    """A trained start in a space whose fixed schedule is a from-scratch one: a space's fixed settings win over the
    fine-tune defaults (FINETUNE), which a user may not know; a from-scratch rate erases much of the training."""
    from chex_tune.config import FINETUNE

    lr = space.fixed.get("lr")
    if isinstance(lr, (int, float)) and lr > 2.5 * FINETUNE["lr"]:
        logger.warning("trials fork from trained weights, but this space fixes lr %s (the fine-tune default is %s, "
                       "measured in benchmarks/front.md): a from-scratch rate undoes much of the training. For a "
                       "fine-tune, use a space made for it (fashion_mnist_resnet18_finetune) or fix a smaller lr",
                       lr, FINETUNE["lr"])


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
def run_plan(plan: Plan, options: SweepOptions, log: Callable[[str], None]) -> SweepResult:
    """Run ``plan``'s trials on Ray Tune (the one driver of sweeps and families), recorded in MLflow."""
    from ray import tune

    from chex_tune.tuning.progress import ProgressCallback
    from chex_tune.tuning.resume import find_sweep_to_resume, restore_tuner
    from chex_tune.tuning.track.ray_callback import RayMlflowCallback
    from chex_tune.tuning.track.store import prepare_store

    store, tracking_uri = prepare_store(options.store, options.tracking_uri)
    names = {o.name for o in plan.objectives}
    early_stop = ParetoAsha(plan.objectives, grace=options.grace, eta=options.eta, max_t=plan.epochs,
                            rung_metrics={k: v for k, v in CHEX_RUNG_METRICS.items() if k in names}) \
        if options.early_stop else None
    callback = RayMlflowCallback(plan.experiment, tracking_uri=tracking_uri, objectives=plan.objectives,
                                 searched=plan.searched, early_stop=early_stop)
    recorder = callback.recorder  # the sweep's one writer: the callback feeds it, this function opens and closes it
    check = ObjectiveCheck(plan.objectives)
    if plan.workers > 1:  # the trial only waits for its workers, which Ray Train places itself
        trainable = tune.with_resources(plan.trainable, {"cpu": TRIAL_DRIVER_CPUS})
        if not options.resume:
            plan.param_space[WORKERS_KEY] = options.workers(plan.workers, store).to_dict()
    else:
        trainable = tune.with_resources(plan.trainable, {"cpu": options.cpus(), "gpu": options.gpus_per_trial})
    if options.resume:
        find_sweep_to_resume(recorder, store / "ray")
        callback.adopt_parent()
        log(f"resuming sweep {recorder.sweep} (MLflow parent run {recorder.parent_run_id})")
        tuner = restore_tuner(recorder, store / "ray", trainable)
    else:
        settings = plan.params if plan.params is not None else {
            k: v for k, v in dataclasses.asdict(options).items() if k not in ("resume", "tracking_uri", "sampler")}
        recorder.open(params=settings, tags=plan.tags)
        callback.adopt_parent()
        if plan.space_file is not None:
            recorder.client.log_dict(recorder.parent_run_id, plan.space_file, "search_space.yaml")
        if plan.max_drop is not None:
            plan.max_drop.record(recorder.client, recorder.parent_run_id)
            log(f"{plan.max_drop.describe()}: trials below val_acc "
                f"{plan.max_drop.reference - plan.max_drop.points / 100:.4f} stay off the front")
        progress = ProgressCallback(options.trials, plan.objectives, log, early_stop)
        callbacks = [callback, progress, *([plan.lineage] if plan.lineage is not None else [])]
        tuner = _new_tuner(trainable, plan, options, store, recorder, callbacks, early_stop, check)
        log(_opening_line(plan, options, recorder, tracking_uri, early_stop))
    with _ray_session(options):
        grid = tuner.fit()
    return _finish(plan, options, recorder, grid, store, log, check)


def _new_tuner(trainable, plan: Plan, options: SweepOptions, store, recorder, callbacks, early_stop, stop):
    from ray import tune

    from chex_tune.tuning.searcher import make_sampler, new_searcher
    from chex_tune.tuning.track.store import optuna_storage_url

    if plan.searcher is not None:
        searcher = plan.searcher(recorder)
    else:
        sampler = make_sampler(options.optuna_sampler, seed=options.seed, trials=options.trials,
                               concurrent=options.concurrent)
        searcher = new_searcher(optuna_storage_url(store), recorder.sweep, plan.objectives, sampler=sampler,
                                optuna_space=plan.optuna_space, initial_points=plan.initial_points,
                                early_stop=early_stop, run_id=recorder.run_id, lineage=plan.lineage,
                                max_drop=plan.max_drop)
    return tune.Tuner(
        trainable, param_space=plan.param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=early_stop, num_samples=options.trials,
                                    max_concurrent_trials=options.concurrent,
                                    reuse_actors=True),  # a trial's worker keeps torch/timm imported
        run_config=tune.RunConfig(name=recorder.sweep, storage_path=str(store / "ray"), verbose=0, callbacks=callbacks,
                                  stop=stop,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def _opening_line(plan: Plan, options: SweepOptions, recorder, tracking_uri: str, early_stop) -> str:
    stopping = (f"; early stopping: Pareto-ASHA, rungs at epochs "
                f"{', '.join(map(str, early_stop.milestones(plan.epochs or 10 ** 6)[:6]))}, keeping 1/{options.eta}"
                if early_stop is not None else "")
    gpus = f"+ {options.gpus_per_trial:g} GPU " if options.gpus_per_trial else ""
    each = f"{options.cpus():g} CPU {gpus}each" if plan.workers == 1 else \
        f"each on {Workers.of_trial(plan.param_space).describe()}"
    return (f"sweep {recorder.sweep}: {options.trials} trials, {options.concurrent} at a time, {each}; "
            f"objectives {', '.join(map(str, plan.objectives))}{stopping}; MLflow {tracking_uri}, "
            f"experiment {plan.experiment!r}")


@contextlib.contextmanager
def _ray_session(options: SweepOptions):
    """Ray for the sweep: the user's own (a notebook, a cluster connection) as it is, else one started and stopped
    here."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = options.ray_cluster
    ray.init(address=address, num_cpus=None if address else os.cpu_count(), include_dashboard=False,
             log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


def _finish(plan: Plan, options: SweepOptions, recorder, grid, store, log, check: ObjectiveCheck) -> SweepResult:
    from chex_tune.tuning.resume import retire_orphans, settle_runs
    from chex_tune.tuning.track.runs import tag_front, trial_rows
    from chex_tune.tuning.track.store import optuna_storage_url

    settle_runs(recorder, grid)
    if check.error:  # Ray stopped that trial with the sweep: its run says why
        recorder.fail_trial(check.trial_id, check.error)
    client = recorder.client
    rows = trial_rows(client, recorder.experiment_id, [recorder.parent_run_id], plan.objectives)
    expected = int(client.get_run(recorder.parent_run_id).data.params.get("trials", options.trials))
    done = sum(row.status in ("FINISHED", "FAILED") or row.stopped_at is not None for row in rows)
    interrupted = not (plan.complete(rows, expected) if plan.complete is not None else done >= expected)
    optuna = optuna_storage_url(store) if plan.searcher is None else None  # a family has no Optuna study
    if not interrupted:
        rows = retire_orphans(recorder, rows, optuna)
    tag_front(client, rows)
    importance = None
    if not interrupted and optuna is not None:
        from chex_tune.tuning.importance import log_importance, searched_importance

        importance = searched_importance(optuna, recorder.sweep, plan.objectives)
        if importance:
            log_importance(client, recorder.parent_run_id, importance, log)
    client.set_terminated(recorder.parent_run_id, "FAILED" if check.error else
                          "KILLED" if interrupted else "FINISHED")
    if check.error:
        raise ValueError(check.error)
    return SweepResult(plan.experiment, recorder.sweep, recorder.parent_run_id, recorder.tracking_uri,
                       plan.objectives, rows, interrupted, importance, _trial_files(recorder, grid))


def _trial_files(recorder, grid) -> dict[str, str]:
    """Each finished trial's files (its last checkpoint, where Ray keeps them), by its MLflow run id."""
    files = {}
    for result in grid:
        key = (result.metrics or {}).get("trial_id")
        run_id = recorder.run_id(key) if key else None
        if run_id is not None and result.checkpoint is not None and result.error is None:
            files[run_id] = result.checkpoint.path
    return files
