"""Allocation: budgets are met, floors hold, and true re-allocation lets widths grow back."""

from __future__ import annotations

import pytest
import timm
import torch

from chex_tune import ChannelExplorer
from chex_tune.core.allocation import AllocationProblem, allocate


def _problem(units, *, min_units=None, step=1):
    return AllocationProblem(units=units, tile=[1] * len(units), min_units=min_units or [1] * len(units),
                             step_units=[step] * len(units))


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("allocator", ["gamma", "uniform"])
def test_channel_budget_within_one_channel_per_group(sparsity, allocator):
    generator = torch.Generator().manual_seed(0)
    units = [16, 32, 64, 64, 128, 256]
    scores = [torch.rand(u, generator=generator) * (n + 1) for n, u in enumerate(units)]
    problem = _problem(units)
    widths = allocate(problem, allocator=allocator, scores=scores, keep_channels=(1 - sparsity) * sum(units))
    assert abs(sum(widths) - (1 - sparsity) * sum(units)) <= len(units)
    assert all(1 <= w <= u for w, u in zip(widths, units))


def test_gamma_ranking_keeps_the_largest_scales():
    scores = [torch.tensor([5.0, 4.0, 0.1, 0.2]), torch.tensor([0.3, 3.0, 0.05, 2.0])]
    widths = allocate(_problem([4, 4]), allocator="gamma", scores=scores, keep_channels=4)
    assert widths == [2, 2]  # 5, 4 | 3, 2
    widths = allocate(_problem([4, 4]), allocator="gamma", scores=scores, keep_channels=3)
    assert widths == [2, 1]


def test_minimum_width_and_rounding():
    scores = [torch.full((64,), 0.01), torch.ones(64)]  # the first group would lose everything
    problem = _problem([64, 64], min_units=[8, 8], step=8)
    widths = allocate(problem, allocator="gamma", scores=scores, keep_channels=64)
    assert widths[0] == 8 and widths[1] == 56
    assert all(w % 8 == 0 for w in widths)


def test_unscored_groups_follow_the_global_fraction():
    scores = [torch.rand(100), None]  # e.g. a squeeze-excite reduction without a norm layer
    widths = allocate(_problem([100, 40]), allocator="gamma", scores=scores, keep_channels=70)
    assert widths[1] == 20 and abs(sum(widths) - 70) <= 2


def _randomise_gammas(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2)


@pytest.mark.parametrize(("allocator", "target"), [("gamma", 0.3), ("gamma", 0.6), ("gamma-per-cost", 0.3),
                                                        ("gamma-normalized", 0.3), ("uniform", 0.5)])
def test_macs_budget_lands_within_two_percent(allocator, target):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    ex = ChannelExplorer(model, x, allocator=allocator, macs_target=target, regrow_ratio=0.0, period=1,
                         total=4, explore_until=0.5, verify=False)
    assert abs(ex.macs() / ex.dense_macs() - target) <= 0.02 * target  # step 0 (uniform widths)
    _randomise_gammas(model, 1)
    ex.apply_masks()
    ex.step(), ex.step()  # t = 2 = stop: the final, regrowth-free step
    assert abs(ex.macs() / ex.dense_macs() - target) <= 0.02 * target
    if allocator != "uniform":  # re-allocation really moved widths away from uniform
        fractions = {round(int(m.sum()) / g.units, 2) for g, m in zip(ex.state.groups, ex.state.masks)}
        assert len(fractions) > 2


def _width(ex, name):
    number = [g.name for g in ex.state.groups].index(name)
    return int(ex.state.masks[number].sum())


def _set_gamma(ex, norm_name, value):
    with torch.no_grad():
        ex.model.get_submodule(norm_name).weight.fill_(value)
        ex.state.snapshot[f"{norm_name}.weight"].fill_(value)
    ex.apply_masks()


@pytest.mark.parametrize("reallocate", [True, False])
def test_true_reallocation_lets_a_group_grow_back(tiny_resnet, image_batch, reallocate):
    ex = ChannelExplorer(tiny_resnet, image_batch, sparsity=0.5, regrow_ratio=0.0, period=1, total=10,
                         explore_until=1.0, reallocate=reallocate, verify=False)
    group, norm = "blocks.0.0", "blocks.0.1"  # the first block's inner channels and their BN
    assert _width(ex, group) == 16  # step 0: uniform half
    _set_gamma(ex, norm, 0.01)
    ex.step()
    if reallocate:
        assert _width(ex, group) == 2  # tiny scales: down to the floor (5% of 32, rounded up)
    _set_gamma(ex, norm, 10.0)  # now its scales, remembered ones included, rank first
    ex.step()
    # with most-recently-used scales the group grows back to full width; ranked at 0 (the authors'
    # code) its inactive channels can never return, so it stays at its active count
    assert _width(ex, group) == (32 if reallocate else 16)


def widths_after_one_step(allocator: str, gamma_of) -> tuple[dict, ChannelExplorer]:
    """resnet18's kept fraction per group after one prune step at 30% of its MACs, its BatchNorm scales set to
    ``gamma_of(layer name, shape)`` first."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    ex = ChannelExplorer(model, torch.randn(1, 3, 32, 32), allocator=allocator, macs_target=0.3, regrow_ratio=0.0,
                         period=1, total=2, explore_until=0.5, verify=False)
    with torch.no_grad():
        for name, layer in model.named_modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.copy_(gamma_of(name, layer.weight.shape))
    ex.apply_masks()
    ex.step()
    assert abs(ex.macs() / ex.dense_macs() - 0.3) <= 0.02 * 0.3
    return {s["group"]: s["width"] / s["channels"] for s in ex.groups_summary}, ex


def test_cost_aware_ranking_keeps_more_of_the_cheap_layers():
    """Equal |gamma| everywhere: per MAC, a late (1x1 px here) channel is cheaper than an early one."""
    fractions = {}
    for allocator in ("gamma", "gamma-per-cost"):
        fractions[allocator], ex = widths_after_one_step(allocator, lambda _name, shape: torch.ones(shape))
    costs = dict(zip([g.name for g in ex.state.groups], ex.cost.unit_macs()))
    assert costs["conv1"] > costs["layer4.0.conv1"] > 0
    assert fractions["gamma-per-cost"]["layer4.0.conv1"] > fractions["gamma"]["layer4.0.conv1"]
    assert fractions["gamma-per-cost"]["conv1"] < fractions["gamma"]["conv1"]


def test_normalized_ranking_ignores_a_groups_scale_and_follows_its_spread():
    """Layers of equal spread, the late ones at ten times the early ones' scale: the global ranking keeps the
    large-scale layers wider whatever their spread, the normalized one does not."""
    generator = torch.Generator()

    def scaled(name, shape):
        if name == "bn1":
            generator.manual_seed(1)  # the first norm layer: the same draws for both allocators
        return (torch.rand(shape, generator=generator) + 0.5) * (10.0 if name.startswith(("layer3", "layer4")) else 1.0)

    widths = {a: widths_after_one_step(a, scaled)[0] for a in ("gamma", "gamma-normalized")}
    early = [g for g in widths["gamma"] if g.startswith(("layer1", "layer2")) and g.endswith("conv1")]
    late = [g for g in widths["gamma"] if g.startswith(("layer3", "layer4")) and g.endswith("conv1")]
    assert min(widths["gamma"][g] for g in late) > max(widths["gamma"][g] for g in early)  # scale decides
    assert min(widths["gamma-normalized"][g] for g in early) > max(widths["gamma"][g] for g in early)
    assert max(widths["gamma-normalized"][g] for g in early) >= min(widths["gamma-normalized"][g] for g in late)
