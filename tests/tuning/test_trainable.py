"""The built-in trainable outside Ray: what a trial reports, and what it does when ``--resume`` restarts it from
its final checkpoint (it had finished, but the interrupted driver never saw it return)."""

from __future__ import annotations

import shutil
import types

import pytest
from ray import tune

from chex_tune.tuning import trainable
from chex_tune.tuning.protocol import FINAL_KEY, FIXED_KEY, PARAMS_KEY, SEARCHED_KEY

CONFIG = {FIXED_KEY: {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
                      "train_subset": 128, "val_size": 64, "lr": 0.05, "device": "cpu"},
          SEARCHED_KEY: ["sparsity"], "sparsity": 0.5, "chex_threads": 1}


def run_trial(monkeypatch, trial_dir, checkpoint=None) -> list[tuple[dict, str | None]]:
    """Run one trial with Ray Tune's calls stood in for; its reports as (metrics, checkpoint directory)."""
    reports = []
    monkeypatch.setattr(tune, "get_context", lambda: types.SimpleNamespace(get_trial_dir=lambda: str(trial_dir)))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(
        (metrics, None if checkpoint is None else checkpoint.path)))
    monkeypatch.setattr(trainable, "trial_location", lambda: {"ray_node": "node-1", "host": "host-1"})
    trainable.run_trial(CONFIG)
    return reports


def refuse_training(*args, **kwargs):
    raise AssertionError("the trial trained again")


def test_a_trial_restarted_from_its_final_checkpoint_reports_the_same_without_training(monkeypatch, tmp_path):
    first = run_trial(monkeypatch, tmp_path / "first")
    assert [m.get("epoch") for m, _ in first] == [1, 2, 2] and [c is None for _, c in first] == [True, True, False]
    final, files = first[-1]
    assert final[FINAL_KEY] and final[PARAMS_KEY]["host"] == "host-1" and final["trial_seconds"] > 0
    assert 0 < final["macs_ratio"] < 0.5 and 0 <= final["test_acc"] <= 1  # half the channels: ~a quarter of MACs
    stored = shutil.copytree(files, tmp_path / "ray-storage" / "checkpoint_000000")  # where Ray keeps it

    monkeypatch.setattr(trainable, "train", refuse_training)
    again = run_trial(monkeypatch, tmp_path / "restarted", tune.Checkpoint.from_directory(str(stored)))
    assert [m for m, _ in again] == [m for m, _ in first]  # every epoch, then the same result and params
    restored = again[-1][1]
    assert restored.startswith(str(tmp_path / "restarted"))  # reported from the trial's own directory
    for name in trainable.ARTIFACTS:
        assert (stored / name).read_bytes() == (tmp_path / "restarted" / "run" / "artifacts" / name).read_bytes()


def test_a_checkpoint_the_trainable_did_not_write_means_training_from_the_start(monkeypatch, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"val_acc": 0.5}')
    monkeypatch.setattr(trainable, "train", refuse_training)
    with pytest.raises(AssertionError, match="trained again"):
        run_trial(monkeypatch, tmp_path / "trial", tune.Checkpoint.from_directory(str(foreign)))
