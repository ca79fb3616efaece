"""The one driver of sweeps and families: a ``Plan`` run as Ray Tune trials, recorded in MLflow.

``run_sweep`` (Optuna proposes the trials) and ``run_family`` (the members, in order) each build a ``Plan``: the
trainable, its param space, the objectives and what differs between them (the searcher, the lineage, the parent
run's params); ``run_plan`` does the rest the same way for both: the store, the MLflow parent run and its writer
callback, progress, early stopping, ``--resume``, Ray started only when it is not running (and stopped only then),
and the end of every trial settled, ranked and tagged. Its result is a ``SweepResult``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from chex_tune.tuning.lineage import Lineage
from chex_tune.tuning.objectives import Objective
from chex_tune.tuning.options import TRIAL_DRIVER_CPUS, SweepOptions
from chex_tune.tuning.pareto_asha import CHEX_RUNG_METRICS, ParetoAsha
from chex_tune.tuning.protocol import WORKERS_KEY, TrialRow
from chex_tune.tuning.reference import MaxDrop
from chex_tune.tuning.searcher import ObjectiveCheck
from chex_tune.tuning.workers import Workers

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
