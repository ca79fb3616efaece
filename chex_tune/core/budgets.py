"""Budget kinds: what the final sub-model must meet, one small class per kind, chosen once from the target set.

A kind knows its target in its own unit (channels, MACs, milliseconds) given the dense model's cost, the cost of a
set of unit masks in that unit, what one unit of each group costs (``gamma-per-cost`` weighs |gamma| by it), the
channel multiple its runtime runs fastest, and what it needs (a latency budget: a latency model). The explorer
asks the bound kind and never its name; a new kind is a subclass registered in ``BUDGETS`` whose target is a
field of the config (a ``ChexConfig`` subclass may add one).

Which kind: the one whose ``setting`` (a config field) is set, else ``channels`` (``sparsity``). Kept free of
torch at import: the CLI's parser reads the names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from chex_tune.core.checks import _in_range, parse_latency_target

if TYPE_CHECKING:
    import torch

    from chex_tune.core.config import ChexConfig
    from chex_tune.core.flops import SubmodelCost
    from chex_tune.core.groups import ChannelGroup
    from chex_tune.core.latency import LatencyModel


class Budget:
    """One budget kind, bound to an explorer's groups and costs (built once, in ``ChannelExplorer.__init__``).

    Subclasses set the class attributes and implement ``target``, ``cost`` and ``unit_costs``; ``check`` validates
    the config's target when the config is built.
    """

    name: ClassVar[str]
    setting: ClassVar[str | None] = None  # the config field holding the target; None: the default kind
    target_hint: ClassVar[str] = ""  # what the target is, for messages ("fraction of dense MACs to keep, ...")
    needs_latency_model: ClassVar[bool] = False
    # the allocation level: the one whose cost lands nearest the target, or (False) the smallest that reaches it
    nearest: ClassVar[bool] = True

    def __init__(self, config: ChexConfig, *, groups: list[ChannelGroup], submodel: SubmodelCost,
                 latency_model: LatencyModel | None = None):
        self.config, self.groups, self.submodel, self.latency_model = config, groups, submodel, latency_model

    @classmethod
    def check(cls, config: ChexConfig) -> None:
        """Raise ValueError naming the value and what is allowed if the config's target is not one."""

    @classmethod
    def prunes_nothing(cls, config: ChexConfig) -> bool:
        """True when this budget keeps the dense model (train it without an explorer)."""
        return False

    @property
    def width_multiple(self) -> int:
        """The channel multiple this budget's runtime runs fastest (widths round to it as well)."""
        return 1

    def target(self) -> float:
        """What the final sub-model may cost, in this budget's unit."""
        raise NotImplementedError

    def cost(self, masks: list[torch.Tensor]) -> float:
        """What the sub-model ``masks`` selects costs, in this budget's unit; grows with the masks."""
        raise NotImplementedError

    def unit_costs(self) -> list[float]:
        """Per group: what one of its units costs in the dense model, in this budget's unit."""
        raise NotImplementedError

    def relative_unit_costs(self) -> list[float]:
        """``unit_costs`` over their mean (never 0): what ``gamma-per-cost`` divides |gamma| by."""
        costs = self.unit_costs()
        mean = sum(costs) / len(costs)
        return [max(c, 1e-12) / mean for c in costs]


class ChannelBudget(Budget):
    """``sparsity``: a fraction of prunable channels removed (the paper's budget)."""

    name = "channels"
    nearest = False  # keep at least the channels asked for: never prune more than ``sparsity``

    @classmethod
    def check(cls, config: ChexConfig) -> None:
        if config.sparsity > 0 and config.regrow_ratio > config.sparsity:
            raise ValueError(f"regrow_ratio must be <= sparsity ({config.sparsity}), got {config.regrow_ratio}")

    @classmethod
    def prunes_nothing(cls, config: ChexConfig) -> bool:
        return config.sparsity == 0

    def target(self) -> float:
        return (1 - self.config.sparsity) * sum(g.channels for g in self.groups)

    def cost(self, masks: list[torch.Tensor]) -> float:
        return sum(int(m.sum()) * g.tile for g, m in zip(self.groups, masks))

    def unit_costs(self) -> list[float]:
        return [float(g.tile) for g in self.groups]


class MacsBudget(Budget):
    """``macs_target``: a fraction of the dense model's MACs kept."""

    name = "macs"
    setting = "macs_target"
    target_hint = "fraction of dense MACs to keep, in (0, 1]"

    @classmethod
    def check(cls, config: ChexConfig) -> None:
        _in_range("macs_target", config.macs_target, 0.0, 1.0, closed_high=True, open_low=True)

    def target(self) -> float:
        return self.config.macs_budget(self.submodel.dense_macs)

    def cost(self, masks: list[torch.Tensor]) -> float:
        return self.submodel.macs(masks)

    def unit_costs(self) -> list[float]:
        return [float(c) for c in self.submodel.unit_macs()]


class LatencyBudget(Budget):
    """``latency_target``: a fraction of the dense model's predicted latency, or milliseconds, read from a latency
    model of the deployment target (its ``width_multiple``, if it has one, rounds the widths too)."""

    name = "latency"
    setting = "latency_target"
    target_hint = "a fraction of the dense latency, or e.g. 4ms"
    needs_latency_model = True

    def __init__(self, config: ChexConfig, *, groups: list[ChannelGroup], submodel: SubmodelCost,
                 latency_model: LatencyModel | None = None):
        if latency_model is None:
            raise ValueError(f"latency_target {config.latency_target!r} needs a latency table of the deployment "
                             "target: pass latency_model=chex_tune.train.latency.table_for(model, LatencyTarget(...)) "
                             "(the training loop builds it from its latency_runtime)")
        super().__init__(config, groups=groups, submodel=submodel, latency_model=latency_model)
        self._unit_ms: list[float] | None = None

    @classmethod
    def check(cls, config: ChexConfig) -> None:
        parse_latency_target(config.latency_target)

    @property
    def width_multiple(self) -> int:
        return int(getattr(self.latency_model, "width_multiple", 1))

    def target(self) -> float:
        return self.config.latency_budget(self.cost(None))

    def cost(self, masks: list[torch.Tensor] | None) -> float:
        """Predicted milliseconds of the sub-model ``masks`` selects (None: the dense model)."""
        return float(self.latency_model.predict(self.submodel.layer_channels(masks)))

    def unit_costs(self) -> list[float]:
        """Per group: the milliseconds its first unit costs in the dense model (as ``SubmodelCost.unit_macs``)."""
        if self._unit_ms is None:  # one prediction per group: computed once
            import torch  # here, not at the top: the CLI's parser reads BUDGETS without torch

            dense = self.cost(None)
            self._unit_ms = []
            for number in range(len(self.groups)):
                masks = [torch.ones(g.units, dtype=torch.bool) for g in self.groups]
                masks[number][0] = False
                self._unit_ms.append(dense - self.cost(masks))
        return list(self._unit_ms)


BUDGETS: dict[str, type[Budget]] = {kind.name: kind for kind in (ChannelBudget, MacsBudget, LatencyBudget)}
DEFAULT_BUDGET = "channels"  # the kind when no registered kind's target is set


def budget_kind(config: ChexConfig) -> type[Budget]:
    """The registered kind whose target ``config`` sets (one at most), else the default kind."""
    chosen = [kind for kind in BUDGETS.values()
              if kind.setting is not None and getattr(config, kind.setting, None) is not None]
    if len(chosen) > 1:
        given = " or ".join(f"{kind.setting} ({getattr(config, kind.setting)!r})" for kind in chosen)
        raise ValueError(f"give one budget: {given}, not {'both' if len(chosen) == 2 else 'several'}")
    return chosen[0] if chosen else BUDGETS[DEFAULT_BUDGET]
