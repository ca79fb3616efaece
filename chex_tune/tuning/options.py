"""What a sweep is asked to do: ``SweepOptions``, the settings ``chex-tune sweep``'s flags and ``run_sweep`` share,
each checked when the options are made (a bad value is named with what is allowed, before anything starts)."""

from __future__ import annotations

import os
import pathlib
import warnings
from dataclasses import dataclass, field

from chex_tune.tuning.pareto_asha import DEFAULT_ETA, DEFAULT_GRACE, check_rule
from chex_tune.tuning.searcher import OPTUNA_SAMPLERS
from chex_tune.tuning.workers import Workers

TRIAL_DRIVER_CPUS = 0.01  # a multi-worker trial's own process: it starts the workers and relays their reports


@dataclass(frozen=True)
class SweepOptions:
    trials: int = 8
    concurrent: int = 2
    epochs: int | None = None  # overrides the space's epochs (built-in trainable only)
    gpus_per_trial: float = 0.0  # fractions share one GPU between trials
    cpus_per_trial: float | None = None  # default: this machine's cores / concurrent
    optuna_sampler: str = "tpe"  # Optuna's sampler (OPTUNA_SAMPLERS); not CHEX's regrowth sampler
    objectives: str | None = None  # overrides the space's (built-in trainable only)
    init: str | None = None  # a trained start every trial forks from: a weights file or an MLflow model URI
                             # (built-in trainable only; overrides the space's)
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray instance (unless Ray already runs)
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite under ``store``
    experiment: str | None = None  # default: the space file's (or the trainable's) name
    resume: bool = False
    seed: int = 0
    store: str = "mlflow"
    early_stop: bool = False  # Pareto-ASHA: stop trials whose objectives fall behind at a rung (pareto_asha.py)
    grace: int = DEFAULT_GRACE  # epochs before the first rung
    eta: int = DEFAULT_ETA  # keep the best 1/eta of each rung
    # Data-parallel workers per trial (Ray Train's TorchTrainer inside the trial; tuning/workers.py). Default: the
    # space's workers_per_trial, else 1. Size a cluster sweep so that concurrent x workers x gpus_per_worker <= GPUs.
    workers_per_trial: int | None = None
    cpus_per_worker: float | None = None  # default: one on a cluster, else this machine's cores shared by all workers
    gpus_per_worker: float = 0.0
    worker_restarts: int = 0  # a multi-worker trial's worker group may start again this often from its last epoch
    sampler: str | None = field(default=None, repr=False)  # deprecated name of optuna_sampler

    def __post_init__(self) -> None:
        if self.sampler is not None:
            warnings.warn("SweepOptions(sampler=...) is deprecated: it is optuna_sampler now ('sampler' names CHEX's "
                          "regrowth sampler)", DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "optuna_sampler", self.sampler)
            object.__setattr__(self, "sampler", None)
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
        if self.workers_per_trial is not None and (not isinstance(self.workers_per_trial, int)
                                                   or isinstance(self.workers_per_trial, bool)
                                                   or self.workers_per_trial < 1):
            raise ValueError(f"--workers-per-trial must be a positive integer, got {self.workers_per_trial!r}")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise ValueError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker!r}")
        if not (isinstance(self.gpus_per_worker, (int, float)) and self.gpus_per_worker >= 0):
            raise ValueError(f"--gpus-per-worker must be >= 0 (fractions share a GPU), got {self.gpus_per_worker!r}")
        if not isinstance(self.worker_restarts, int) or self.worker_restarts < 0:
            raise ValueError(f"--worker-restarts must be an integer >= 0, got {self.worker_restarts!r}")
        if self.optuna_sampler not in OPTUNA_SAMPLERS:
            raise ValueError(f"unknown --optuna-sampler {self.optuna_sampler!r}; choose one of: "
                             f"{', '.join(OPTUNA_SAMPLERS)}")
        check_rule(self.grace, self.eta, prefix="--")

    @property
    def ray_cluster(self) -> str | None:
        return self.ray_address or os.environ.get("RAY_ADDRESS")

    def cpus(self) -> float:
        """CPUs per trial: as given, else one on a cluster, else this machine's cores shared by the concurrent."""
        return self.cpus_per_trial or (1.0 if self.ray_cluster else max(1.0, (os.cpu_count() or 1) // self.concurrent))

    def workers(self, count: int, store: pathlib.Path):
        """The workers of each trial of ``count`` (a multi-worker trial's resume state kept under ``store``)."""
        if count > 1 and self.gpus_per_trial:
            raise ValueError(f"--gpus-per-trial {self.gpus_per_trial:g} with {count} workers per trial: give "
                             "--gpus-per-worker instead (each worker is one data-parallel rank)")
        # locally every core is shared out, less what the trials' own processes hold
        cpus = self.cpus_per_worker or (1.0 if self.ray_cluster else
                                        (os.cpu_count() or 1) / (self.concurrent * count) - TRIAL_DRIVER_CPUS)
        return Workers(count, cpus=cpus, gpus=self.gpus_per_worker, restarts=self.worker_restarts,
                       storage=str(store / "ray" / "workers"))

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_trial > 0 or self.gpus_per_worker > 0 else "cpu"
