"""Budget kinds, allocators and initial scorers as registry entries: every registered budget kind keeps the contract
(a target in its own unit, a cost of masks that grows with them, unit costs, a width multiple) and the explorer
meets it; a budget kind, an allocator or an initial scorer registered here drives the explorer as the built-in ones
do, without the explorer knowing its name."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_latency_budget import FormulaLatency

from chex_tune import ChannelExplorer
from chex_tune.core.allocation import ALLOCATORS, Allocator
from chex_tune.core.budgets import BUDGETS, DEFAULT_BUDGET, Budget
from chex_tune.core.config import ChexConfig
from chex_tune.core.masks import masks_of_widths
from chex_tune.core.scoring import INITIAL_SCORERS

# Half of the dense cost, one per registered kind: a kind registered without an entry here fails the first test.
TARGETS = {"channels": {"sparsity": 0.5}, "macs": {"macs_target": 0.5}, "latency": {"latency_target": 0.5}}


def explorer(model, batch, **settings) -> ChannelExplorer:
    settings = {"regrow_ratio": 0.0, "period": 1, "explore_until": 1.0, **settings}
    return ChannelExplorer(model, batch, total=4, verify=False, latency_model=FormulaLatency(model, example=batch),
                           **settings)


def _set_gammas(ex, values: dict[str, float]) -> None:
    """Norm layer name -> its |gamma| (and its remembered one), every other norm layer at 1."""
    with torch.no_grad():
        for name, layer in ex.model.named_modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.fill_(values.get(name, 1.0))
                ex.state.snapshot[f"{name}.weight"].fill_(values.get(name, 1.0))
    ex.apply_masks()


def test_every_registered_kind_names_itself_and_reads_one_config_field():
    fields = {f.name for f in dataclasses.fields(ChexConfig)}
    assert set(TARGETS) == set(BUDGETS)
    assert [name for name, kind in BUDGETS.items() if kind.setting is None] == [DEFAULT_BUDGET] == ["channels"]
    for name, kind in BUDGETS.items():
        assert issubclass(kind, Budget) and kind.name == name
        assert kind.setting is None or (kind.setting in fields and kind.target_hint)
        assert ChexConfig(**TARGETS[name]).budget == name
        assert ChexConfig(**TARGETS[name]).budget_kind is kind
    assert [k for k in BUDGETS.values() if k.needs_latency_model] == [BUDGETS["latency"]]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_bound_kind_costs_masks_in_its_unit(name, tiny_resnet, image_batch):
    ex = explorer(tiny_resnet, image_batch, **TARGETS[name])
    budget, groups = ex.budget, ex.state.groups
    assert type(budget) is BUDGETS[name]
    full = [torch.ones(g.units, dtype=torch.bool) for g in groups]
    third = masks_of_widths(groups, [g.units // 3 for g in groups])
    assert budget.target() == pytest.approx(0.5 * budget.cost(full))  # half of the dense cost, in its unit
    assert 0 < budget.cost(third) < budget.target()
    costs = budget.unit_costs()
    assert len(costs) == len(groups) and all(c > 0 for c in costs)
    assert sum(budget.relative_unit_costs()) == pytest.approx(len(groups))
    assert budget.width_multiple == 1 and isinstance(budget.width_multiple, int)


@pytest.mark.parametrize("allocator", ["gamma", "gamma-per-cost", "uniform"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_explorer_meets_each_kinds_target(name, allocator, tiny_resnet, image_batch):
    ex = explorer(tiny_resnet, image_batch, allocator=allocator, **TARGETS[name])
    _set_gammas(ex, {"blocks.0.1": 3.0, "blocks.1.1": 0.2})  # the two inner groups rank apart
    ex.step(), ex.step()
    cost, target = ex.budget.cost(ex.state.masks), ex.budget.target()
    if ex.budget.nearest:  # the level nearest the target: within a few units of the tiny model's coarse widths
        assert cost == pytest.approx(target, rel=0.1)
    else:  # a channel budget keeps at least its channels, less than one unit per group more
        assert target <= cost < target + len(ex.state.groups)


def test_the_runtimes_width_multiple_comes_only_with_a_latency_budget(tiny_resnet, image_batch):
    def with_multiple(**settings):
        return ChannelExplorer(tiny_resnet, image_batch, total=4, verify=False, regrow_ratio=0.0,
                               latency_model=FormulaLatency(tiny_resnet, 8, example=image_batch), **settings)

    assert with_multiple(latency_target=0.5).budget.width_multiple == 8
    assert with_multiple(latency_target=0.5, width_multiple=4).width_multiple == 8
    assert with_multiple(latency_target=0.5, width_multiple=3).width_multiple == 24
    assert with_multiple(macs_target=0.5).width_multiple == 1 and with_multiple(sparsity=0.5).width_multiple == 1


@dataclasses.dataclass(frozen=True)
class ParamsConfig(ChexConfig):
    params_target: float | None = None  # fraction of the dense model's parameters kept


class ParamsBudget(Budget):
    """A kind the package does not have: parameters, read from the explorer's ``SubmodelCost``."""

    name = "params"
    setting = "params_target"
    target_hint = "fraction of dense parameters to keep, in (0, 1]"

    @classmethod
    def check(cls, config):
        if not 0 < config.params_target <= 1:
            raise ValueError(f"params_target must be in (0, 1], got {config.params_target!r}")

    def target(self):
        return self.config.params_target * self.submodel.dense_params

    def cost(self, masks):
        return self.submodel.params(masks)

    def unit_costs(self):
        dense = self.submodel.dense_params
        return [dense - self.cost(masks_of_widths(self.groups, [g.units - (m == n) for m, g in enumerate(self.groups)]))
                for n in range(len(self.groups))]


@pytest.fixture
def params_kind(monkeypatch):
    monkeypatch.setitem(BUDGETS, "params", ParamsBudget)


@pytest.mark.parametrize("allocator", ["gamma", "gamma-per-cost"])
def test_a_kind_registered_here_drives_the_explorer(params_kind, allocator, tiny_resnet, image_batch):
    config = ParamsConfig(params_target=0.4, allocator=allocator)
    assert config.budget == "params" and not config.dense
    ex = ChannelExplorer(tiny_resnet, image_batch, config=config, total=4, period=1, explore_until=1.0,
                         regrow_ratio=0.0, verify=False)
    assert isinstance(ex.budget, ParamsBudget) and isinstance(ex.config, ParamsConfig)
    ex.step()
    assert ex.params() == pytest.approx(0.4 * ex.dense_params(), rel=0.1)
    assert ex.params() < 0.5 * ex.dense_params()


def test_a_registered_kinds_target_is_checked_and_is_one_budget_among_the_others(params_kind):
    with pytest.raises(ValueError, match=r"params_target must be in \(0, 1\], got 2"):
        ParamsConfig(params_target=2)
    with pytest.raises(ValueError, match=r"give one budget: macs_target \(0.5\) or params_target \(0.4\), not both"):
        ParamsConfig(macs_target=0.5, params_target=0.4)
    assert ParamsConfig().budget == "channels"


def test_an_allocator_registered_here_weighs_the_scores_the_explorer_ranks(monkeypatch, tiny_resnet, image_batch):
    seen = []

    def smallest_first(scores, unit_costs):
        seen.append(unit_costs())
        return [None if s is None else -s for s in scores]

    monkeypatch.setitem(ALLOCATORS, "smallest-gamma", Allocator(ALLOCATORS["gamma"].widths, smallest_first))
    widths = {}
    for allocator in ("gamma", "smallest-gamma"):
        ex = explorer(tiny_resnet, image_batch, sparsity=0.5, allocator=allocator)
        _set_gammas(ex, {"blocks.0.1": 10.0})  # the first block's inner channels rank first
        ex.step()
        widths[allocator] = {g["group"]: g["width"] for g in ex.groups_summary}
    assert widths["gamma"]["blocks.0.0"] == 32  # all of it
    assert widths["smallest-gamma"]["blocks.0.0"] == 2  # its floor: 5% of 32, rounded up
    assert seen == [ex.budget.relative_unit_costs()] == [[1.0, 1.0, 1.0]]  # channels: every unit costs one


def test_an_initial_scorer_registered_here_picks_the_first_masks(monkeypatch, tiny_resnet, image_batch):
    monkeypatch.setitem(INITIAL_SCORERS, "last-units", lambda state, group, width: torch.arange(group.units).float())
    ex = explorer(tiny_resnet, image_batch, sparsity=0.5, initial_scorer="last-units")
    for group, mask in zip(ex.state.groups, ex.state.masks):
        kept = int(mask.sum())
        assert kept == group.units // 2 and mask[group.units - kept:].all()  # the last half, nothing before it
