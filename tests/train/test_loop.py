"""The training loop on synthetic data with timm's tiny test_resnet (seconds on a CPU)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from chex_tune import load_compact
from chex_tune.config import RunConfig
from chex_tune.core.flops import count_macs, count_params
from chex_tune.train.data import load_data
from chex_tune.train.evaluate import evaluate
from chex_tune.train.loop import NonFiniteLossError, train
from chex_tune.train.metrics import EPOCH, EPOCH_SECONDS, LR, MACS, PARAMS, SPARSITY, TRAIN_LOSS, VAL_ACC
from chex_tune.train.optim import lr_at

# What the loop reports after every epoch (with a MACs budget, macs_budget too).
EPOCH_METRICS = (EPOCH, TRAIN_LOSS, VAL_ACC, LR, EPOCH_SECONDS, MACS, PARAMS, SPARSITY)

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
        "train_subset": 256, "val_size": 96, "sparsity": 0.5, "regrow_ratio": 0.2, "period": 2,
        "explore_until": 0.6, "lr": 0.05, "device": "cpu", "seed": 0}


def tiny(**changes) -> RunConfig:
    return RunConfig.from_dict({**TINY, **changes})


def test_two_epoch_chex_run_writes_metrics_and_a_loadable_compact_model(tmp_path):
    seen = []
    result = train(tiny(), tmp_path, callback=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2]
    assert all(set(EPOCH_METRICS) <= set(m) for m in seen)
    assert seen[-1]["macs"] < result.dense_macs and seen[-1]["sparsity"] == pytest.approx(0.5, abs=0.05)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "macs", "dense_macs", "params", "latency_ms", "history"):
        assert key in metrics
    assert len(metrics["history"]) == 2 and metrics["history"][0]["lr"] > 0
    model = load_compact(tmp_path / "compact.pt")
    data = load_data(tiny().train, "cpu")
    assert metrics["macs"] == count_macs(model, data.example_input()[:1]) < metrics["dense_macs"]
    assert metrics["params"] == count_params(model) < metrics["dense_params"]
    assert evaluate(model, data, "val") == metrics["val_acc"]
    assert evaluate(model, data, "test") == metrics["test_acc"]
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert RunConfig.from_dict(saved) == tiny()
    widths = json.loads((tmp_path / "widths.json").read_text())
    assert widths and all(0 < w["width"] <= w["channels"] for w in widths)


def test_compact_model_accuracy_equals_the_masked_models(tmp_path):
    result = train(tiny(compact_after_explore=False), tmp_path)
    assert result.val_acc == result.val_acc_masked


def test_dense_baseline_has_no_explorer_and_full_cost(tmp_path):
    result = train(tiny(sparsity=0.0), tmp_path)
    assert result.macs == result.dense_macs and result.params == result.dense_params
    assert all(m["sparsity"] == 0 for m in result.history)
    assert count_params(load_compact(tmp_path / "compact.pt")) == result.dense_params


def test_training_learns_the_synthetic_task(tmp_path):
    result = train(tiny(epochs=3, sparsity=0.0, train_subset=512), tmp_path)
    assert result.val_acc > 0.5  # 10 classes: chance is 0.1


class Stop(Exception):
    pass


@pytest.mark.parametrize("explore_until", [0.3, 0.8], ids=["compacted-before-the-kill", "masked-at-the-kill"])
def test_a_run_killed_after_epoch_one_resumes_bit_identically(tmp_path, explore_until):
    config = tiny(epochs=3, explore_until=explore_until)
    straight = train(config, tmp_path / "straight")

    def kill_after_first_epoch(metrics):
        if metrics["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(config, tmp_path / "resumed", callback=kill_after_first_epoch)
    resumed = train(config, tmp_path / "resumed", resume=True)
    drop = {"epoch_seconds"}
    assert [{k: v for k, v in m.items() if k not in drop} for m in resumed.history] == \
        [{k: v for k, v in m.items() if k not in drop} for m in straight.history]
    a = load_compact(tmp_path / "straight" / "compact.pt").state_dict()
    b = load_compact(tmp_path / "resumed" / "compact.pt").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_acc == straight.test_acc


def test_an_existing_run_needs_resume_and_the_same_settings(tmp_path):
    train(tiny(epochs=1), tmp_path)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(epochs=1), tmp_path)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.05 -> 0.1\)"):
        train(tiny(epochs=1, lr=0.1), tmp_path, resume=True)


def test_a_diverging_run_stops_with_a_non_finite_loss_error(tmp_path):
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        train(tiny(epochs=1, lr=1e12, sparsity=0.0), tmp_path)


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, total=100, base_lr=0.1, warmup_fraction=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert max(lrs) == pytest.approx(0.1) and lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


@pytest.mark.parametrize(("changes", "message"), [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 1000}, "batch_size 1000 is larger than the training set"),
])
def test_bad_training_settings_are_named(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        train(tiny(**changes), tmp_path)


@pytest.mark.slow
def test_fashion_mnist_subset_trains_far_above_chance(tmp_path):
    """Real data (Debian's dataset-fashion-mnist): resnet18, 4,000 images, 3 epochs, S = 0.5 (~1 min)."""
    config = RunConfig.from_dict({"model": "resnet18", "dataset": "fashion-mnist", "stem": "timm", "epochs": 3,
                                  "train_subset": 4000, "val_size": 1000, "sparsity": 0.5, "period": 8,
                                  "device": "cpu"})
    result = train(config, tmp_path)
    assert result.test_acc > 0.6 and result.val_acc > 0.6  # chance: 0.1
    assert result.macs < 0.5 * result.dense_macs


def test_norm_init_sets_every_batchnorm_scale_and_is_validated(tmp_path):
    from chex_tune.train.loop import Trainer

    trainer = Trainer(tiny(norm_init=0.5, sparsity=0.0), tmp_path / "run")
    scales = [m.weight for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert scales and all(torch.equal(w, torch.full_like(w, 0.5)) for w in scales)
    with pytest.raises(ValueError, match=r"norm_init must be in \(0\.0, inf\)"):
        tiny(norm_init=0.0)
