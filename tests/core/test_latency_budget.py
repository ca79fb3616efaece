"""A latency budget: the allocator meets milliseconds read from a latency model the way it meets MACs, widths
round to the runtime's multiple, and the setting's errors name what is allowed.

The latency model here is a formula (each layer's input x output channels x positions, plus a per-layer constant),
so what the tests assert is exact; tests/train/test_latency_table.py checks real tables.
"""

from __future__ import annotations

import pytest
import torch

from chex_tune.config import ChexConfig
from chex_tune.core.explorer import ChannelExplorer
from chex_tune.core.flops import output_positions
from chex_tune.core.masks import masks_of_widths
from chex_tune.train.models import create_model

SHAPE = (2, 3, 32, 32)


class FormulaLatency:
    """Milliseconds = sum over layers of in x out x positions / 1e5 + 0.01 per layer; runs fastest in multiples of
    ``width_multiple`` channels."""

    def __init__(self, model, width_multiple: int = 1, example=None):
        self.positions = output_positions(model, torch.zeros(SHAPE) if example is None else example)
        self.dense = {name: (layer.weight.shape[1], layer.weight.shape[0]) for name, layer in model.named_modules()
                      if name in self.positions}
        self.width_multiple = width_multiple

    def predict(self, channels):
        widths = {**self.dense, **channels}
        return sum(i * o * self.positions[n] / 1e5 + 0.01 for n, (i, o) in widths.items())


def explorer(width_multiple: int = 1, **settings) -> ChannelExplorer:
    model = create_model("test_resnet", num_classes=10, in_chans=3, stem="timm")
    settings = {"sparsity": 0.0, "regrow_ratio": 0.0, **settings}
    return ChannelExplorer(model, torch.randn(SHAPE), total=10, verify=False,
                           latency_model=FormulaLatency(model, width_multiple), **settings)


@pytest.mark.parametrize("target", [0.5, 0.3, 0.15])
def test_a_latency_budget_is_met_after_every_explore_step(target):
    ex = explorer(latency_target=target, regrow_ratio=0.1, period=1, explore_until=1.0)
    dense = ex.dense_latency_ms()
    for _ in range(3):
        ex.explore()
    final = ex._widths(allocator="gamma", scores=None)  # the keep widths the budget admits
    masks = masks_of_widths(ex.state.groups, final)
    assert ex.budget.cost(masks) == pytest.approx(target * dense, rel=0.08)
    ex.config = ChexConfig.from_dict({**ex.config.to_dict(), "regrow_ratio": 0.0})
    ex.explore()  # no regrowth: the masks themselves sit at the budget
    assert ex.latency_ms() == pytest.approx(target * dense, rel=0.08)
    assert ex.latency_ms() < ex.dense_latency_ms()


def test_a_budget_in_milliseconds_and_the_runtimes_width_multiple():
    dense = explorer(latency_target=0.5).dense_latency_ms()
    ex = explorer(width_multiple=8, latency_target=f"{0.4 * dense:.4f} ms")
    ex.explore()
    assert ex.latency_ms() == pytest.approx(0.4 * dense, rel=0.1)
    assert ex.width_multiple == 8
    for group in ex.groups_summary:
        assert group["width"] % 8 == 0 or group["width"] == group["channels"], group
    # without a latency budget the runtime's multiple is not imposed (a MACs budget keeps its own rounding)
    assert explorer(width_multiple=8, macs_target=0.5).width_multiple == 1


def test_uniform_widths_under_a_latency_budget_meet_it_too():
    ex = explorer(latency_target=0.3, allocator="uniform")
    ex.explore()
    assert ex.latency_ms() == pytest.approx(0.3 * ex.dense_latency_ms(), rel=0.15)
    fractions = {round(g["width"] / g["channels"], 1) for g in ex.groups_summary if g["prunable"]}
    assert len(fractions) <= 2  # one fraction, give or take rounding


def test_a_latency_budget_without_a_latency_model_says_what_to_pass():
    model = create_model("test_resnet", num_classes=10, in_chans=3, stem="timm")
    with pytest.raises(ValueError, match=r"latency_target 0.5 needs a latency table .* latency_model=chex_tune"):
        ChannelExplorer(model, torch.randn(SHAPE), total=10, latency_target=0.5, verify=False)


@pytest.mark.parametrize(("value", "message"), [
    (1.5, r"latency_target must be in \(0.0, 1.0\], got 1.5"),
    ("fast", "latency_target must be a fraction of the dense latency in \\(0, 1\\] or milliseconds such as '4ms', "
             "got 'fast'"),
    ("-2ms", "got '-2ms'"),
    ("0ms", "got '0ms'"),
])
def test_bad_latency_targets_name_the_value_and_what_is_allowed(value, message):
    with pytest.raises(ValueError, match=message):
        ChexConfig(latency_target=value)


def test_one_budget_only_and_the_budget_in_milliseconds():
    with pytest.raises(ValueError, match=r"give one budget: macs_target \(0.5\) or latency_target \(0.3\), not both"):
        ChexConfig(macs_target=0.5, latency_target=0.3)
    assert ChexConfig(latency_target=0.25).latency_budget(8.0) == 2.0
    assert ChexConfig(latency_target="3.5 ms").latency_budget(8.0) == 3.5
    assert ChexConfig(latency_target="3.5ms").budget == "latency" and not ChexConfig(latency_target=0.5).dense
    assert ChexConfig().latency_budget(8.0) is None
