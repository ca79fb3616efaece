"""The command line's logging set-up: the library only logs; the commands decide what is shown."""

from __future__ import annotations

import logging
import os
import sys


def configure(*, quiet_sweep: bool = False) -> None:
    """chex_tune's progress lines on stderr as plain text; other libraries' chatter turned down for a sweep."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    package = logging.getLogger("chex_tune")
    if not any(getattr(h, "chex_cli", False) for h in package.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.chex_cli = True
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False
    if quiet_sweep:
        import optuna

        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter honours verbose=0; we print our own
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # MLflow logs each database error with its traceback and raises it too: the sweep reports it (a full
        # disk as one line, anything else with the traceback), so MLflow's own copy is left out
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
        logging.getLogger("torch._export").setLevel(logging.ERROR)  # MLflow's torch.export of each model
