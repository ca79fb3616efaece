"""chex-tune as a plugin for your own training: CHEX in your loop, your Ray Tune or Optuna set-up, MLflow tracking.

    from chex_tune.tuning import ChexReporter, ChexSpace, SweepOptions, run_sweep

In the loop: ``ChexReporter`` (or ``ChexLightningCallback`` for PyTorch Lightning). The search: ``SearchSpace``
(the built-in loop's YAML spaces) or ``ChexSpace(...)`` (the same thing from keywords, for your trainable),
``merge_spaces`` to join it with your own Ray entries. The sweep: ``run_sweep`` (a trainable or a SearchSpace, any
objectives; with ``inherit=True``, and in ``run_family``, a trial starts from ``parent_model(config)``), or your
own ``tune.Tuner`` with ``RayMlflowCallback`` and ``ParetoAsha``, or your own Optuna study
with ``OptunaMlflowCallback``. Reading back: ``open_store``, ``read_trials``, ``load_compact``. Names load on first
use, so an Optuna-only program never imports Ray. Needs the [tune] extra (and [lightning] for the Lightning
callback).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ChexReporter": "reporter", "ChexResult": "reporter",
    "SearchSpace": "space", "ChexSpace": "space", "merge_spaces": "space",
    "Objective": "objectives", "parse_objectives": "objectives",
    "run_sweep": "sweep", "run_space_sweep": "sweep", "SweepOptions": "sweep", "SweepResult": "sweep",
    "run_family": "family", "FamilyResult": "family", "parent_model": "protocol",
    "RayMlflowCallback": "track.ray_callback", "OptunaMlflowCallback": "track.optuna_callback",
    "ParetoAsha": "pareto_asha", "ChexLightningCallback": "lightning",
    "read_trials": "track.runs", "open_store": "track.store",
    "load_compact": "chex_tune.core.compact", "save_compact": "chex_tune.core.compact",
    "BuilderImportError": "chex_tune.core.builders", "builder_reference": "chex_tune.core.builders",
}

__all__ = ["BuilderImportError", "ChexLightningCallback", "ChexReporter", "ChexResult", "ChexSpace", "FamilyResult",
           "Objective", "OptunaMlflowCallback", "ParetoAsha", "RayMlflowCallback", "SearchSpace", "SweepOptions",
           "SweepResult", "builder_reference", "load_compact", "merge_spaces", "open_store", "parent_model",
           "parse_objectives", "read_trials", "run_family", "run_space_sweep", "run_sweep", "save_compact"]

if TYPE_CHECKING:
    from chex_tune.core.builders import BuilderImportError, builder_reference
    from chex_tune.core.compact import load_compact, save_compact
    from chex_tune.tuning.family import FamilyResult, run_family
    from chex_tune.tuning.lightning import ChexLightningCallback
    from chex_tune.tuning.objectives import Objective, parse_objectives
    from chex_tune.tuning.pareto_asha import ParetoAsha
    from chex_tune.tuning.protocol import parent_model
    from chex_tune.tuning.reporter import ChexReporter, ChexResult
    from chex_tune.tuning.space import ChexSpace, SearchSpace, merge_spaces
    from chex_tune.tuning.sweep import SweepOptions, SweepResult, run_space_sweep, run_sweep
    from chex_tune.tuning.track.optuna_callback import OptunaMlflowCallback
    from chex_tune.tuning.track.ray_callback import RayMlflowCallback
    from chex_tune.tuning.track.runs import read_trials
    from chex_tune.tuning.track.store import open_store


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chex_tune.tuning' has no attribute {name!r}")
    path = module if module.startswith("chex_tune.") else f"chex_tune.tuning.{module}"
    value = getattr(importlib.import_module(path), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
