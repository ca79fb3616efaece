"""Live sweep progress: a line when a trial starts, after each epoch (with an ETA) and when it ends."""

from __future__ import annotations

import re
from types import SimpleNamespace

from chex_tune.tuning.objectives import parse_objectives
from chex_tune.tuning.progress import ProgressCallback
from chex_tune.tuning.protocol import FINAL_KEY


def _trial(trial_id: str, status: str = "RUNNING", **config):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, last_result={})


def test_progress_names_trials_epochs_and_the_time_left():
    lines: list[str] = []
    progress = ProgressCallback(4, parse_objectives("val_acc:max,macs:min"), lines.append)
    first = _trial("a", macs_target=0.25, chex_fixed={"epochs": 2}, chex_threads=1)
    second = _trial("b", macs_target=0.5, chex_fixed={"epochs": 2})
    progress.on_trial_start(0, [first], first)
    progress.on_trial_start(0, [first, second], second)
    assert lines == ["trial 1/4 started: macs_target=0.2500", "trial 2/4 started: macs_target=0.5000"]
    progress.started_at -= 60  # one trial-epoch took a minute: 7 more take about 7 minutes
    progress.on_trial_result(0, [first, second], first, {"epoch": 1, "val_acc": 0.5, "macs": 2e6})
    assert lines[-1] == "trial 1/4 epoch 1/2: val_acc 0.5000, macs 2M (2 running, 0 done, about 7 min left)"
    progress.on_trial_result(0, [first, second], first, {"epoch": 2, "val_acc": 0.6, FINAL_KEY: True})
    progress.on_trial_result(0, [first, second], first, {"epoch": 1, "val_acc": 0.5, "done": True})
    assert len(lines) == 3  # the final report and Ray's end-of-trial copy are no epochs
    second.last_result = {"val_acc": 0.7, "macs": 1e6, "train_seconds": 12.0}
    progress.on_trial_complete(0, [first, second], second)
    assert lines[-1] == "trial 2/4 done: val_acc 0.7000, macs 1M (12 s; 1 of 4 done)"


def test_without_known_epochs_the_eta_comes_from_finished_trials():
    lines: list[str] = []
    progress = ProgressCallback(3, parse_objectives("val_loss:min"), lines.append)
    trial = _trial("a")
    progress.on_trial_start(0, [trial], trial)
    assert lines[-1] == "trial 1/3 started"
    progress.on_trial_result(0, [trial], trial, {"epoch": 1, "val_loss": 0.25})
    assert lines[-1] == "trial 1/3 epoch 1: val_loss 0.2500 (1 running, 0 done)"
    trial.last_result = {"val_loss": 0.2, "train_seconds": 30.0}
    progress.on_trial_complete(0, [trial], trial)
    progress.started_at -= 30
    progress.on_trial_result(0, [trial], _trial("b"), {"epoch": 1, "val_loss": 0.3})
    assert re.search(r"\(1 running, 1 done, about 6\d s left\)$", lines[-1])  # ~30 s a trial, 2 left
