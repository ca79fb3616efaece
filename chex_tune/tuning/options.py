"""What a sweep is asked to do: ``SweepOptions``, the settings ``chex-tune sweep``'s flags and ``run_sweep`` share,
each checked when the options are made (a bad value is named with what is allowed, before anything starts)."""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from chex_tune._fields import setting
from chex_tune.tuning.protocol import WORKERS_KEY
from chex_tune.tuning.reference import check_max_drop
from chex_tune.tuning.rungs import DEFAULT_ETA, DEFAULT_GRACE, check_rule

# A family (tuning/family.py): its default MACs budgets, fractions of the dense model's, and its shapes
DEFAULT_LEVELS = (0.5, 0.25, 0.12, 0.06, 0.03)
SHAPES = ("cascade", "independent")
# What of a sweep's options a family takes: where and how its members run, and where they are recorded
FAMILY_OPTIONS = ("concurrent", "gpus_per_trial", "cpus_per_trial", "ray_address", "tracking_uri", "experiment",
                  "resume", "store", "workers_per_trial", "cpus_per_worker", "gpus_per_worker", "worker_restarts")
TRIAL_DRIVER_CPUS = 0.01  # a multi-worker trial's own process: it starts the workers and relays their reports


@dataclass(frozen=True)
class Workers:
    """How a trial is spread: ``count`` data-parallel workers of ``cpus`` and ``gpus`` each; ``restarts``: times the
    worker group may start again from its last checkpoint after losing a worker before the trial fails;
    ``storage``: where Ray Train keeps the resume state (every node must reach it)."""

    count: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    restarts: int = 0
    storage: str | None = None

    @classmethod
    def of_trial(cls, config: Mapping) -> Workers:
        return cls(**config.get(WORKERS_KEY) or {})

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        gpus = f" + {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.count} workers of {self.cpus:g} CPU{gpus}"


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep is asked to do; ``chex-tune sweep``'s flags are these fields (``cli/_flags.py``)."""

    trials: int = setting(8, "trials in all")
    concurrent: int = setting(2, "trials running at once")
    epochs: int | None = setting(None, "override the space's epochs (built-in trainable)")
    gpus_per_trial: float = setting(0.0, "e.g. 0.25: four trials share a GPU")
    cpus_per_trial: float | None = setting(None, "default: this machine's cores / --concurrent; 1 on a cluster")
    optuna_sampler: str = setting("tpe", "Optuna's sampler: tpe, nsga2 or random (not CHEX's regrowth sampler)",
                                  metavar="NAME")
    objectives: str | None = setting(None, "e.g. val_acc:max,macs:min (default: the space's)")
    init: str | None = setting(None, "every trial fine-tunes this trained dense model (a weights file or an MLflow "
                                     "URI, runs:/ID or models:/NAME@ALIAS); overrides the space's init",
                               metavar="WEIGHTS")
    ray_address: str | None = setting(None, "a Ray cluster (default: RAY_ADDRESS, else a local instance unless Ray "
                                            "already runs)")
    tracking_uri: str | None = setting(None, "MLflow server (default: MLFLOW_TRACKING_URI, else sqlite under store)")
    experiment: str | None = setting(None, "MLflow experiment (default: the space file's or the trainable's name)")
    resume: bool = setting(False, "continue the experiment's latest sweep")
    seed: int = setting(0, "the Optuna sampler's seed")
    store: str = setting("mlflow", "local store: MLflow db, Optuna db, Ray state")
    early_stop: bool = setting(False, "stop trials whose objectives fall behind at a rung (Pareto-ASHA; KILLED runs)")
    inherit: bool = setting(False, "each trial starts from a finished trial of the sweep with more MACs (the "
                                   "smallest on the front above its budget), or from --init while none has "
                                   "finished; needs a trained start and a MACs budget (built-in trainable)")
    # The first trials' MACs budgets, large to small (the space's centre otherwise), so that with --inherit the
    # early trials seed the later ones as a family's cascade does: "0.5,0.25,0.12" or a tuple of fractions.
    ladder: str | tuple | None = setting(None, "the first trials' MACs budgets, large to small (e.g. 0.5,0.25,0.12), "
                                               "the space's centre otherwise", metavar="F,F,...")
    # A constraint, not a stop: the trained start is evaluated once before the trials (metric dense_val_acc on the
    # parent run); Optuna learns the trials beyond it as infeasible and they stay off the front (finished runs,
    # tagged chex.beyond_max_drop).
    max_drop: float | None = setting(None, "keep only trials within PT percentage points of the dense model's val "
                                           "accuracy on the front (needs --init: the trained start, evaluated once); "
                                           "the others stay finished runs, tagged chex.beyond_max_drop",
                                     metavar="PT")
    grace: int = setting(DEFAULT_GRACE, "--early-stop: epochs before the first rung")
    eta: int = setting(DEFAULT_ETA, "--early-stop: keep the best 1/ETA of each rung")
    # Size a cluster sweep so that concurrent x workers x gpus_per_worker <= GPUs.
    workers_per_trial: int | None = setting(
        None, "train each trial on N data-parallel workers (DDP through Ray Train; the space's batch_size is the "
              "global batch); default: the space's workers_per_trial, else 1", metavar="N")
    cpus_per_worker: float | None = setting(None, "default: this machine's cores / (--concurrent x N); 1 on a "
                                                  "cluster")
    gpus_per_worker: float = setting(0.0, "GPUs of each worker (a cluster sweep needs concurrent x N x this <= its "
                                          "GPUs)")
    worker_restarts: int = setting(0, "a multi-worker trial that loses a worker starts again from its last epoch "
                                      "this often before it fails (0: the trial fails, the sweep goes on)")
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
        from chex_tune.tuning.searcher import OPTUNA_SAMPLERS  # Ray and Optuna: not for building the CLI

        if self.optuna_sampler not in OPTUNA_SAMPLERS:
            raise ValueError(f"unknown --optuna-sampler {self.optuna_sampler!r}; choose one of: "
                             f"{', '.join(OPTUNA_SAMPLERS)}")
        check_rule(self.grace, self.eta, prefix="--")
        object.__setattr__(self, "max_drop", check_max_drop(self.max_drop))
        if self.ladder is not None:
            object.__setattr__(self, "ladder", _ladder(self.ladder))

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


def _ladder(value) -> tuple[float, ...]:
    """``--ladder`` as budgets in (0, 1), large to small."""
    try:
        budgets = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        budgets = ()
    if not budgets or not all(0 < b < 1 for b in budgets):
        raise ValueError(f"--ladder must be MACs budgets, fractions in (0, 1) like 0.5,0.25,0.12, got {value!r}")
    return tuple(sorted(budgets, reverse=True))
