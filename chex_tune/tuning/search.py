"""A sweep: Ray Tune runs CHEX trials, Optuna proposes them (multi-objective), MLflow records them.

    result = run_sweep(SearchSpace.load("search_spaces/fashion_mnist_resnet18.yaml"), SweepOptions(trials=8))

Where things live by default (``store``, ``./mlflow``): ``mlflow.db`` and ``artifacts/`` (the MLflow
store), ``optuna.db`` (the studies, one per sweep) and ``ray/`` (Ray's experiment state, from which
``resume`` continues the experiment's latest sweep without re-running finished trials). Only this
process writes to MLflow and Optuna; trials report to it through Ray.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from dataclasses import dataclass

from ray.tune import Callback

from chex_tune.tuning.runs import ROLE_TAG, SWEEP_TAG, default_tracking_uri, format_metric, tag_front, trial_rows
from chex_tune.tuning.space import Objective, SearchSpace, parse_objectives

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class SweepOptions:
    trials: int = 8
    concurrent: int = 2
    epochs: int | None = None  # overrides the space's epochs
    gpus_per_trial: float = 0.0  # fractions share one GPU between trials
    cpus_per_trial: float | None = None  # default: this machine's cores / concurrent
    sampler: str = "tpe"
    objectives: str | None = None  # default: the space's
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray instance
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite under ``store``
    experiment: str | None = None  # default: the space file's name
    resume: bool = False
    seed: int = 0
    store: str = "mlflow"

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


@dataclass
class SweepResult:
    experiment: str
    sweep: str
    parent_run_id: str
    tracking_uri: str
    objectives: tuple[Objective, ...]
    rows: list[dict]  # one per trial run: run_id, status, params, metrics, rank (0 = Pareto front)
    interrupted: bool = False

    @property
    def front(self) -> list[dict]:
        return [row for row in self.rows if row["rank"] == 0]


def make_sampler(name: str, *, seed: int, trials: int, concurrent: int):
    import optuna

    if name == "tpe":  # random start-up trials first, then TPE (multi-objective capable)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)),
                                          multivariate=True, constant_liar=concurrent > 1)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, 2 * concurrent))
    return optuna.samplers.RandomSampler(seed=seed)


def resolve_store(options: SweepOptions) -> tuple[pathlib.Path, str]:
    store = pathlib.Path(options.store).expanduser().resolve()
    store.mkdir(parents=True, exist_ok=True)
    uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store)
    return store, uri


def trial_constants(space: SearchSpace, options: SweepOptions, cpus: float) -> dict:
    """What every trial gets besides Optuna's suggestions (see trainable.py)."""
    fixed = dict(space.fixed)
    if options.epochs is not None:
        fixed["epochs"] = options.epochs
    fixed["device"] = "cuda" if options.gpus_per_trial > 0 else "cpu"
    if fixed.get("data_dir"):  # trials run in their own directories
        fixed["data_dir"] = str(pathlib.Path(fixed["data_dir"]).expanduser().resolve())
    space.run_config({name: param.midpoint() for name, param in space.params.items()}, **fixed)  # fail early
    return {"chex_fixed": fixed, "chex_searched": sorted(space.params), "chex_threads": max(1, int(cpus))}


def run_sweep(space: SearchSpace, options: SweepOptions, *, log=print) -> SweepResult:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter honours verbose=0; we print our own
    quiet_libraries()
    import ray
    from ray import tune

    from chex_tune.tuning.tracking import MlflowSweepCallback, client_for, ensure_experiment
    from chex_tune.tuning.trainable import run_trial

    objectives = parse_objectives(options.objectives) if options.objectives else space.objectives
    store, tracking_uri = resolve_store(options)
    experiment = options.experiment or pathlib.Path(space.source).stem
    client = client_for(tracking_uri)
    local_store = tracking_uri.startswith("sqlite:")
    experiment_id = ensure_experiment(client, experiment, (store / "artifacts").as_uri() if local_store else None)
    ray_root = store / "ray"
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    cpus = options.cpus_per_trial or (1.0 if address else max(1.0, (os.cpu_count() or 1) // options.concurrent))

    if options.resume:
        sweep, parent_run_id = latest_sweep(client, experiment_id, experiment, ray_root)
    else:
        sweep = f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
        constants = trial_constants(space, options, cpus)
    ray.init(address=address, num_cpus=None if address else os.cpu_count(), include_dashboard=False,
             log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        trainable = tune.with_resources(run_trial, {"cpu": cpus, "gpu": options.gpus_per_trial})
        if options.resume:
            client.update_run(parent_run_id, status="RUNNING")
            log(f"resuming sweep {sweep} (MLflow parent run {parent_run_id})")
            tuner = tune.Tuner.restore(str(ray_root / sweep), trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            parent_run_id = start_parent_run(client, experiment_id, sweep, space, options, objectives)
            tuner = new_tuner(space, options, objectives, constants, trainable, sweep=sweep, ray_root=ray_root,
                              callback=MlflowSweepCallback(tracking_uri, experiment_id, parent_run_id, sweep),
                              store=store, log=log)
            log(f"sweep {sweep}: {options.trials} trials, {options.concurrent} at a time, {cpus:g} CPU "
                f"{f'+ {options.gpus_per_trial:g} GPU ' if options.gpus_per_trial else ''}each; "
                f"objectives {', '.join(map(str, objectives))}; MLflow {tracking_uri}, experiment {experiment!r}")
        tuner.fit()
    finally:
        ray.shutdown()
    rows = trial_rows(client, experiment_id, [parent_run_id], objectives)
    tag_front(client, rows)
    expected = int(client.get_run(parent_run_id).data.params.get("trials", options.trials))
    done = sum(row["status"] in ("FINISHED", "FAILED") for row in rows)
    interrupted = done < expected
    client.set_terminated(parent_run_id, "KILLED" if interrupted else "FINISHED")
    return SweepResult(experiment, sweep, parent_run_id, tracking_uri, objectives, rows, interrupted)


def quiet_libraries() -> None:
    """One line per trial is ours to print; a failed trial's traceback goes to its MLflow run (error.txt)."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    logging.getLogger("torch._export").setLevel(logging.ERROR)  # MLflow's torch.export of each model


def new_tuner(space, options, objectives, constants, trainable, *, sweep, ray_root, callback, store, log):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{store / 'optuna.db'}")
    searcher = OptunaSearch(space=space.optuna_distributions(), metric=[o.name for o in objectives],
                            mode=[o.mode for o in objectives], storage=storage, study_name=sweep,
                            sampler=make_sampler(options.sampler, seed=options.seed, trials=options.trials,
                                                 concurrent=options.concurrent))
    return tune.Tuner(
        trainable, param_space=constants,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=options.trials,
                                    max_concurrent_trials=options.concurrent,
                                    reuse_actors=True),  # a trial's worker keeps torch/timm imported
        run_config=tune.RunConfig(name=sweep, storage_path=str(ray_root), verbose=0,
                                  callbacks=[callback, ProgressCallback(options.trials, objectives, log)],
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def start_parent_run(client, experiment_id, sweep, space, options, objectives) -> str:
    from chex_tune.tuning.tracking import log_params

    run = client.create_run(experiment_id, run_name=sweep, tags={
        SWEEP_TAG: sweep, ROLE_TAG: "sweep", "chex.space": str(space.source),
        "chex.objectives": ",".join(map(str, objectives))})
    settings = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("resume", "tracking_uri")}
    log_params(client, run.info.run_id, {k: str(v) for k, v in settings.items()})
    client.log_dict(run.info.run_id, space.to_dict(), "search_space.yaml")
    return run.info.run_id


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


class ProgressCallback(Callback):
    """One line per finished or failed trial (Ray's own tables are off: verbose=0)."""

    def __init__(self, total: int, objectives, log):
        self.total, self.objectives, self.log, self.done = total, objectives, log, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        metrics = trial.last_result or {}
        shown = ", ".join(f"{o.name} {format_metric(o.name, metrics.get(o.name))}" for o in self.objectives)
        self.log(f"trial {self.done}/{self.total} done: {shown} ({metrics.get('train_seconds', 0):.0f} s training)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        from chex_tune.tuning.tracking import last_line, trial_error_text

        self.log(f"trial {self.done}/{self.total} FAILED: {last_line(trial_error_text(trial))} "
                 "(traceback: error.txt of its MLflow run)")
