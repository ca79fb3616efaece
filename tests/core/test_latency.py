"""Latency measured with torch.utils.benchmark: adaptive repeats, spread and conditions in the result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chex_tune.core.latency import measure_latency


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


def test_adaptive_measurement_returns_the_median_its_spread_and_the_conditions():
    model = Counting()
    before = torch.get_num_threads()
    result = measure_latency(model, (3, 8, 8), batch_size=2, threads=1, warmup=3, max_run_s=0.5)
    assert torch.get_num_threads() == before  # the thread count is set for the timing only
    assert model.shapes == {(2, 3, 8, 8)} and not model.training
    assert result["method"] == "torch.utils.benchmark.Timer.adaptive_autorange"
    assert (result["threads"], result["batch_size"], result["device"], result["dtype"]) == (1, 2, "cpu", "float32")
    assert result["latency_ms"] > 0 and result["iqr_ms"] >= 0
    assert result["spread"] == pytest.approx(result["iqr_ms"] / result["latency_ms"])
    assert result["samples"] >= 1 and result["repeats"] == result["samples"] * result["calls_per_sample"]
    # every timed call and the warm-up ran the model (the timer's own block-size estimate adds more)
    assert model.calls >= result["repeats"] + 3


def test_repeats_times_exactly_that_many_single_calls():
    model = Counting()
    result = measure_latency(model, (1, 3, 8, 8), repeats=7, warmup=2)  # a full shape: its batch is replaced
    assert model.calls == 9 and model.shapes == {(1, 3, 8, 8)}
    assert (result["samples"], result["calls_per_sample"], result["repeats"]) == (7, 1, 7)
    assert result["method"] == "7 single calls" and result["threads"] == torch.get_num_threads()


@pytest.mark.parametrize(("kwargs", "message"), [({"repeats": 0}, "repeats must be >= 1"),
                                                 ({"warmup": -1}, "warmup >= 0")])
def test_bad_counts_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latency(Counting(), (3, 8, 8), **kwargs)
