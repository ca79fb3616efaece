"""A run with a latency table: latency_ms comes from the table (the same widths, the same number), the finished
model is timed end to end in the table's runtime beside it, and a latency budget is met.

The runtime is a formula (tests/train/test_latency_table.py's stand-in), so the numbers asserted are exact.
"""

from __future__ import annotations

import json

import pytest
import torch

from chex_tune.config import RunConfig
from chex_tune.train.latency import runtimes
from chex_tune.train.latency.layers import layer_specs
from chex_tune.train.loop import train

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
        "train_subset": 256, "val_size": 96, "regrow_ratio": 0.1, "period": 2, "explore_until": 0.6, "lr": 0.05,
        "device": "cpu", "seed": 0, "latency_runtime": "torch", "latency_threads": 1}


def formula_ms(network, target) -> float:
    specs = layer_specs(network, torch.zeros(1, *target.input_shape))
    return sum(1e-4 * s.in_channels * s.groups * s.out_channels * s.input_size[0] * s.input_size[1] + 0.01
               for s in specs.values()) + 0.3


@pytest.fixture
def formula_runtime(monkeypatch, tmp_path):
    def layer_ms(spec, in_width, out_width, target):
        cin, cout, _ = runtimes.layer_channels(spec, in_width, out_width)
        return 1e-4 * cin * cout * spec.input_size[0] * spec.input_size[1] + 0.01, 0.01

    monkeypatch.setitem(runtimes.RUNTIMES, "torch", runtimes.Runtime(layer_ms, lambda m, t: (formula_ms(m, t), 0.02)))
    monkeypatch.setenv("CHEX_TUNE_CACHE", str(tmp_path / "cache"))


def test_a_latency_budget_run_lands_on_its_budget_and_logs_the_measured_latency(tmp_path, formula_runtime):
    seen = []
    result = train(RunConfig.from_dict({**TINY, "latency_target": 0.4}), tmp_path / "run", callback=seen.append)
    budget = seen[0]["latency_budget_ms"]
    assert all(m["latency_budget_ms"] == budget for m in seen) and all(m["latency_ms"] > 0 for m in seen)
    dense_ms = budget / 0.4
    latency = result.latency
    assert latency.predicted and latency.latency_ms == pytest.approx(budget, rel=0.1)
    assert latency.measured_ms == pytest.approx(latency.latency_ms, rel=1e-6)  # the formula is exact
    assert latency.latency_ms < 0.5 * dense_ms
    assert latency.runtime == "torch" and latency.threads == 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["latency_ms"] == latency.latency_ms and saved["latency_measured_ms"] == latency.measured_ms
    tables = list((tmp_path / "cache" / "latency").glob("torch-*.json"))
    assert len(tables) == 1  # built once, where the cache says


def test_the_same_widths_give_the_same_latency_in_every_run(tmp_path, formula_runtime):
    """A MACs-budget run with a latency table: its latency_ms is the table's, read by a second run, not re-timed."""
    first = train(RunConfig.from_dict({**TINY, "macs_target": 0.5}), tmp_path / "a")
    again = train(RunConfig.from_dict({**TINY, "macs_target": 0.5}), tmp_path / "b")
    assert first.latency.latency_ms == again.latency.latency_ms and "latency_budget_ms" not in first.history[0]
    assert first.latency.latency_ms == pytest.approx(first.latency.measured_ms, rel=1e-6)
