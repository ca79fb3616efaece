"""A family from --init has no dense member: the trained start's own metrics are its reference line."""

from __future__ import annotations

import pytest

from chex_tune import load_compact
from chex_tune.config import RunConfig
from chex_tune.core.flops import count_macs
from chex_tune.train.data import load_data
from chex_tune.train.evaluate import evaluate
from chex_tune.train.loop import train
from chex_tune.train.metrics import MACS, MACS_RATIO, TEST_ACC, VAL_ACC, metric
from chex_tune.tuning.family import REFERENCE_LABEL, run_family

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "batch_size": 32, "train_subset": 128,
        "val_size": 64, "device": "cpu"}


def test_a_family_from_init_prints_the_trained_models_own_metrics_under_its_table(tmp_path):
    dense = train(RunConfig.from_dict({**TINY, "epochs": 1, "sparsity": 0.0}), tmp_path / "dense")
    weights = tmp_path / "dense" / "compact.pt"
    result = run_family({**TINY, "epochs": 1}, levels=(0.5,), init=str(weights), store=str(tmp_path / "store"),
                        experiment="ref", log=lambda _m: None)
    model = load_compact(weights).eval()
    data = load_data(RunConfig.from_dict(TINY).train, "cpu")
    reference = result.reference
    assert reference[VAL_ACC] == evaluate(model, data, "val") == dense.val_acc  # the weights as given, not retrained
    assert reference[TEST_ACC] == evaluate(model, data, "test") == dense.test_acc
    assert reference[MACS] == count_macs(model, data.example_input()[:1]) == dense.dense_macs
    assert reference[MACS_RATIO] == pytest.approx(1.0)
    assert [m["key"] for m in result.members] == ["0.5"]  # a line, not a member: the front holds compact models only
    last = str(result).splitlines()[-1]
    assert last.startswith(f"{REFERENCE_LABEL}: ")
    assert f"{metric(VAL_ACC).title} {metric(VAL_ACC).cell(dense.val_acc).strip()}" in last
    assert f"{metric(MACS).title} {metric(MACS).cell(dense.dense_macs).strip()}" in last
