"""chex-tune as a plugin for your own training: CHEX in your loop, your Ray Tune or Optuna set-up, MLflow tracking.

    from chex_tune.tuning import ChexReporter, ChexSpace, run_sweep

In the loop: ``ChexReporter`` (or ``ChexLightningCallback`` for PyTorch Lightning). The search:
``ChexSpace`` (CHEX parameters as Ray Tune distributions or Optuna suggestions) and ``merge_spaces``.
The sweep: ``run_sweep`` (any trainable, any objectives) or your own ``tune.Tuner`` with
``RayMlflowCallback``, or your own Optuna study with ``OptunaMlflowCallback``. Reading back:
``read_trials``. Names load on first use, so an Optuna-only program never imports Ray. Needs the
[tune] extra (and [lightning] for the Lightning callback).

Importing this package registers the ``"package.module:function"`` model builder that compact models
of your own module classes are rebuilt with (``load_compact``, here or in ``chex_tune``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from chex_tune.core.builders import BuilderImportError, builder_reference
from chex_tune.core.compact import load_compact, save_compact

_EXPORTS = {
    "ChexReporter": "reporter", "ChexResult": "reporter",
    "ChexSpace": "chex_space", "merge_spaces": "chex_space",
    "Objective": "objectives", "parse_objectives": "objectives",
    "run_sweep": "search", "run_space_sweep": "search", "SweepOptions": "search", "SweepResult": "search",
    "RayMlflowCallback": "ray_callback", "ParetoAsha": "pareto_asha",
    "OptunaMlflowCallback": "optuna_callback",
    "ChexLightningCallback": "lightning_callback",
    "read_trials": "runs", "open_store": "runs",
}

__all__ = ["BuilderImportError", "ChexLightningCallback", "ChexReporter", "ChexResult", "ChexSpace", "Objective",
           "OptunaMlflowCallback", "ParetoAsha", "RayMlflowCallback", "SweepOptions", "SweepResult",
           "builder_reference", "load_compact", "merge_spaces", "open_store", "parse_objectives", "read_trials",
           "run_space_sweep", "run_sweep", "save_compact"]

if TYPE_CHECKING:
    from chex_tune.tuning.chex_space import ChexSpace, merge_spaces
    from chex_tune.tuning.lightning_callback import ChexLightningCallback
    from chex_tune.tuning.objectives import Objective, parse_objectives
    from chex_tune.tuning.optuna_callback import OptunaMlflowCallback
    from chex_tune.tuning.pareto_asha import ParetoAsha
    from chex_tune.tuning.ray_callback import RayMlflowCallback
    from chex_tune.tuning.reporter import ChexReporter, ChexResult
    from chex_tune.tuning.runs import open_store, read_trials
    from chex_tune.tuning.search import SweepOptions, SweepResult, run_space_sweep, run_sweep


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chex_tune.tuning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"chex_tune.tuning.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
