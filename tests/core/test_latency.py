"""A run's latency without a table: the finished model timed in PyTorch eager by the runtimes' one timer, as a
``Latency`` that states its conditions; ``Latency`` reads back both layouts earlier metrics.json files hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chex_tune.train.latency.run import EagerLatency
from chex_tune.train.latency.target import LatencyTarget
from chex_tune.train.result import Latency


class Counting(nn.Module):
    """A small conv net that counts its calls and the batch shapes it saw."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.calls, self.shapes = 0, set()

    def forward(self, x):
        self.calls += 1
        self.shapes.add(tuple(x.shape))
        return self.conv(x).mean()


def test_eager_latency_times_the_model_at_its_target_and_states_the_conditions(monkeypatch):
    from chex_tune.train.latency import runtimes

    monkeypatch.setattr(runtimes, "MODEL_RUN_S", (0.0, 0.05, 0.3))  # warm-up, least and most timed seconds: short
    model = Counting().train()
    before = torch.get_num_threads()
    latency = EagerLatency(LatencyTarget(runtime="torch", input_shape=(3, 8, 8), batch_size=2, threads=1))
    assert latency.table is None and latency.report(None, model) == {}  # nothing predicted per epoch
    measured = latency.measure(model)
    assert torch.get_num_threads() == before  # the thread count is set for the timing only
    assert model.shapes == {(2, 3, 8, 8)} and not model.training and model.calls > 3
    assert (measured.runtime, measured.threads, measured.batch_size, measured.device) == ("torch", 1, 2, "cpu")
    assert measured.latency_ms > 0 and not measured.predicted and measured.measured_ms is None
    assert measured.iqr_ms == pytest.approx(measured.spread * measured.latency_ms)
    assert measured.metrics() == {"latency_ms": measured.latency_ms}


def test_latency_reads_back_the_measured_and_the_predicted_layouts():
    measured = {"latency_ms": 1.5, "iqr_ms": 0.1, "spread": 0.0667, "samples": 12, "calls_per_sample": 40,
                "repeats": 480, "device": "cpu", "batch_size": 1, "dtype": "float32", "threads": 2, "warmup": 5,
                "method": "torch.utils.benchmark.Timer.adaptive_autorange"}  # what eager runs wrote before
    old = Latency.from_dict(measured)
    assert (old.latency_ms, old.runtime, old.predicted) == (1.5, "torch", False)
    predicted = Latency(latency_ms=0.6, spread=0.02, iqr_ms=0.014, threads=1, batch_size=1, device="cpu",
                        runtime="onnxruntime", measured_ms=0.7, width_multiple=8)
    assert Latency.from_dict(predicted.to_dict()) == predicted
    assert predicted.metrics() == {"latency_ms": 0.6, "latency_measured_ms": 0.7}
    assert "predicted by the onnxruntime table" in predicted.describe() and "IQR" in old.describe()
