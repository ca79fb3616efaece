"""Live progress of a sweep, through ``logging`` (or the CLI's ``print``): a line when a trial starts, after each of
its epochs (with the sweep's ETA) and when it ends. Ray's own progress tables are off (verbose=0)."""

from __future__ import annotations

import logging
import time

from ray.tune import Callback

from chex_tune.train.metrics import EPOCH, TRAIN_SECONDS
from chex_tune.tuning.objectives import format_metric, missing_objectives
from chex_tune.tuning.protocol import FINAL_KEY, FIXED_KEY, RESERVED_KEYS

logger = logging.getLogger(__name__)


def _planned_epochs(trial) -> int | None:
    """The epochs a trial will train, when its config says (the built-in trainable's does)."""
    return (trial.config or {}).get(FIXED_KEY, {}).get("epochs")


class ProgressCallback(Callback):
    """Progress lines to ``log``.

    The ETA extrapolates the sweep's wall time per trial-epoch so far to the trial-epochs left; it is known
    once a trial's config says how many epochs it runs (the built-in trainable's does), else it is
    extrapolated from finished trials. Epochs that early stopping saved are taken off; trials it may still
    stop are not, so with ``early_stop`` the ETA is an upper bound.
    """

    def __init__(self, total: int, objectives, log, early_stop=None):
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
        config = {k: v for k, v in (trial.config or {}).items() if k not in RESERVED_KEYS}
        shown = ", ".join(f"{k}={format_metric(k, v) if isinstance(v, float) else v}" for k, v in config.items())
        self.log(f"trial {self._number(trial)}/{self.total} started{f': {shown}' if shown else ''}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = result.get(EPOCH)
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
        missing = missing_objectives(metrics, self.objectives)
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
        seconds = metrics.get(TRAIN_SECONDS, metrics.get("time_total_s", 0))
        self.log(f"{name} done: {shown} ({seconds:.0f} s; {self.done} of {self.total} done)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        from chex_tune.tuning.track.recorder import last_line, trial_error_text

        self.log(f"trial {self._number(trial)}/{self.total} FAILED: {last_line(trial_error_text(trial))} "
                 f"(traceback: error.txt of its MLflow run; {self.done} of {self.total} done)")
