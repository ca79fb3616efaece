"""A latency sweep end to end: latency_target searched, every trial reading the node's one latency table, the front
in milliseconds (chex-tune pareto --objectives val_acc:max,latency_ms:min).

The table is built here first with a formula for a runtime (so its numbers are known exactly) and left in the cache
the trials read (CHEX_TUNE_CACHE): a trial that finds it never times layers, and its latency_ms is the formula's.
"""

from __future__ import annotations

import pytest
import torch

from chex_tune.cli import main
from chex_tune.config import TrainConfig
from chex_tune.train.data import load_data
from chex_tune.train.latency import LatencyTarget, runtimes, table_for
from chex_tune.train.latency.layers import layer_specs
from chex_tune.train.models import create_model
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

FIXED = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
         "train_subset": 128, "val_size": 64, "lr": 0.05, "latency_runtime": "torch", "latency_threads": 1}
SPACE = {"fixed": FIXED, "search": {"latency_target": {"low": 0.2, "high": 0.6}},
         "objectives": ["val_acc:max", "latency_ms:min"]}


def formula_layer_ms(spec, in_width, out_width, target):
    cin, cout, _ = runtimes.layer_channels(spec, in_width, out_width)
    return 1e-4 * cin * cout * spec.input_size[0] * spec.input_size[1] + 0.01, 0.01


def formula_model_ms(network, target):
    specs = layer_specs(network, torch.zeros(1, *target.input_shape))
    return sum(formula_layer_ms(s, s.in_channels, s.out_channels, target)[0] for s in specs.values()) + 0.3, 0.01


def test_a_latency_sweep_reads_one_table_and_its_front_is_in_milliseconds(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CHEX_TUNE_CACHE", str(cache))
    data = load_data(TrainConfig(**{k: v for k, v in FIXED.items() if k in TrainConfig.__dataclass_fields__}), "cpu")
    dense = create_model("test_resnet", num_classes=data.num_classes, in_chans=data.in_chans, stem="timm").eval()
    target = LatencyTarget(runtime="torch", input_shape=tuple(data.example_input().shape[1:]), threads=1)
    with monkeypatch.context() as patch:  # the formula only while the table is built here
        patch.setitem(runtimes.RUNTIMES, "torch", runtimes.Runtime(formula_layer_ms, formula_model_ms))
        table = table_for(dense, target)
    assert table.dense_ms == pytest.approx(formula_model_ms(dense, target)[0])
    store = tmp_path / "store"
    result = run_sweep(SearchSpace.from_dict(SPACE, source="latency.yaml"),
                       SweepOptions(trials=2, concurrent=2, cpus_per_trial=1, store=str(store), experiment="lat",
                                    optuna_sampler="random"), log=lambda _m: None)
    assert len(result.rows) == 2 and all(r.status == "FINISHED" for r in result.rows)
    assert len(list((cache / "latency").glob("torch-*.json"))) == 1  # no trial built another table
    for row in result.rows:
        metrics = row.metrics
        budget = float(row.params["latency_target"]) * table.dense_ms
        assert metrics["latency_ms"] == pytest.approx(budget, rel=0.15)  # the table's milliseconds, at the budget
        assert metrics["latency_measured_ms"] > 0  # timed for real in PyTorch eager by the trial
    capsys.readouterr()
    assert main(["pareto", "lat", "--store", str(store), "--objectives", "val_acc:max,latency_ms:min"]) == 0
    out = capsys.readouterr().out
    assert "latency ms" in out
    for row in result.rows:
        if row.rank == 0:
            assert f"{row.metrics['latency_ms']:.3f}" in out
