"""ChannelExplorer: CHEX's prune-and-regrow loop around any traceable CNN.

    ex = ChannelExplorer(model, example_inputs, sparsity=0.5, regrow_ratio=0.3,
                         period=2, total=200, explore_until=0.72)
    for batch in data:
        loss.backward(); optimizer.step()
        ex.step()              # re-zero masked channels; prune-regrow when the schedule says so
    small = ex.compact()       # a physically smaller nn.Module; small(x) == model(x) in eval mode

``period`` and ``total`` share one unit: optimizer steps (call ``step()`` after every optimizer step)
or epochs (call ``step()`` once per epoch and pass ``optimizer=`` so masks are still re-applied after
every optimizer step through a hook). See chex-method.md for the algorithm and our choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from chex_tune.core.allocation import ALLOCATORS, AllocationProblem, allocate
from chex_tune.core.builders import recipe_args
from chex_tune.core.compact import compose_removed, find_inexact_groups, make_recipe, prune_copy, removed_channels
from chex_tune.core.config import ChexConfig
from chex_tune.core.flops import SubmodelCost
from chex_tune.core.groups import ChannelGroup, GraphBuildError, find_groups
from chex_tune.core.latency import LatencyModel
from chex_tune.core.masks import MaskState, masks_of_widths
from chex_tune.core.model_checks import check_forward, first_input, warn
from chex_tune.core.regrow import get_sampler
from chex_tune.core.schedule import ExploreSchedule
from chex_tune.core.scoring import INITIAL_SCORERS, get_scorer, top_k_indices


class ChannelExplorer:
    """CHEX on ``model`` in place. See the module docstring for the call pattern.

    CHEX settings are ``ChexConfig``'s fields, with its defaults (one source for both): pass them as
    keywords (``sparsity=0.5, period=2``) or as ``config=`` (keywords then override it):
      sparsity / macs_target / latency_target: the budget, a fraction of prunable channels removed, of dense
        MACs kept, or of the dense model's predicted latency kept (or milliseconds: "4ms"; needs latency_model).
      regrow_ratio: initial regrow fraction (delta0), relative to all prunable channels.
      period, explore_until, unit: the schedule (``unit`` is "step" or "epoch").
      scorer: "css" (column subset selection, the paper) or "l1".
      sampler: "projection" (the paper) or "uniform" regrowth.
      allocator: "gamma" (global |gamma| ranking, the paper), "gamma-per-cost" (|gamma| per unit of the
        budget: per MAC for a MACs budget), "gamma-normalized" (|gamma| over its group's mean: for trained
        starts) or "uniform" (same fraction everywhere).
      reallocate: rank inactive channels by their most-recently-used |gamma| (widths move both ways);
        False ranks them at 0 like the authors' code (widths can only shrink).
      min_width, width_multiple: floor per group (fraction, at least one unit); rounding of widths.
      seed: the regrowth draws.
    Other keyword arguments:
      total: the schedule's length, in ``unit``s (required).
      ignore: qualified names of layers whose output channels stay (the classifier always does).
      latency_model: what a latency budget is read from: an object whose ``predict(channels)`` returns the
        milliseconds of the network with these per-layer (input channels per group, output channels), the
        dict ``SubmodelCost.layer_channels`` gives (``chex_tune.train.latency.table_for`` builds one per
        deployment target). Its ``width_multiple``, if it has one, is the channel multiple the runtime runs
        fastest: widths round to it under a latency budget (with ``width_multiple``, to both).
      optimizer: if given, masks are re-applied after each of its steps and restored entries get
        their optimizer state reset.
      verify: check on a copy that masking each group equals removing it; groups that fail stay
        unpruned with one warning.
      graph_timeout_s: limit on building the channel dependency graph; past it the model stays dense
        with a warning.
      builder, builder_kwargs: how ``load_compact`` rebuilds the dense model of a model not from timm: a
        function or ``"package.module:function"`` that returns it, and its keyword arguments (plain
        data), checked here by building it once. timm models are recognised without them.
      model_name, model_kwargs: the spelling saved recipes use (``builder`` is then a registered builder
        name such as "timm" or "import"; for timm, ``model_name`` alone), kept for existing callers.
    The model's forward must return one tensor (the logits) for ``example_inputs``, a batch.
    """

    def __init__(self, model: nn.Module, example_inputs, *, total: int, config: ChexConfig | None = None,
                 ignore: Sequence[str] = (), optimizer: torch.optim.Optimizer | None = None, verify: bool = True,
                 graph_timeout_s: float | None = 120.0, latency_model: LatencyModel | None = None,
                 builder: str | Callable[..., nn.Module] | None = None,
                 builder_kwargs: Mapping | None = None, model_name: str | None = None,
                 model_kwargs: Mapping | None = None, **settings):
        base = config or ChexConfig()  # a subclass (one adding a budget kind's target) stays one
        self.config = config = type(base).from_dict({**base.to_dict(), **settings})
        period, unit, seed = config.period, config.unit, config.seed
        self.schedule = ExploreSchedule(period=period, total=total, explore_until=config.explore_until)
        self.score = get_scorer(config.scorer)
        self.sample = get_sampler(config.sampler)
        self.model = model
        self.example_inputs = example_inputs
        self.optimizer = optimizer
        self.generator = torch.Generator().manual_seed(seed)
        self.t = 0
        self._recipe_args = recipe_args(model, builder=builder, builder_kwargs=builder_kwargs,
                                        model_name=model_name, model_kwargs=model_kwargs)

        self.groups = self._discover(model, example_inputs, ignore, verify, graph_timeout_s, seed)
        self.state = MaskState(model, self.groups)
        self.cost = SubmodelCost(model, self.groups, example_inputs)
        self.latency_model = latency_model
        self.budget = config.budget_kind(config, groups=self.state.groups, submodel=self.cost,
                                         latency_model=latency_model)
        self.problem = AllocationProblem.for_groups(self.state.groups, min_width=config.min_width,
                                                    width_multiple=self.width_multiple)
        self._hook = optimizer.register_step_post_hook(lambda *_: self.apply_masks()) if optimizer else None
        if unit == "epoch" and optimizer is None:
            warn("unit='epoch' without optimizer=: masks are re-applied only when step() is called, so masked "
                  "weights drift within an epoch; pass optimizer= to re-apply them after every optimizer step")
        self._initial_prune()

    @classmethod
    def from_config(cls, model: nn.Module, example_inputs, config: ChexConfig, *, total: int,
                    **options) -> ChannelExplorer:
        """Build from a ``ChexConfig`` (what YAML files, the CLI and sweeps produce)."""
        return cls(model, example_inputs, total=total, config=config, **options)

    # ------------------------------------------------------------------------------ construction
    @staticmethod
    def _discover(model, example_inputs, ignore, verify, timeout_s, seed) -> list[ChannelGroup]:
        check_forward(model, example_inputs)
        try:
            report = find_groups(model, example_inputs, ignore=ignore, timeout_s=timeout_s)
        except GraphBuildError as exc:
            warn(f"{type(model).__name__} stays dense: {exc}")
            return []
        groups = report.groups
        if verify:
            for name, reason in find_inexact_groups(model, groups, example_inputs, seed=seed).items():
                next(g for g in groups if g.name == name).skip_reason = reason
        skipped = {g.name: g.skip_reason for g in groups if not g.prunable}
        if not any(g.prunable for g in groups) and not skipped:
            warn(f"{type(model).__name__} stays dense: the dependency graph found no channel group outside the "
                  "classifier")
        elif skipped:
            listing = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
            warn(f"{len(skipped)} of {len(groups)} channel groups stay unpruned ({listing})")
        return groups

    def _initial_prune(self) -> None:
        """Step 0: uniform widths at the budget plus delta0, chosen by ``initial_scorer``; snapshot first."""
        self.state.take_snapshot()
        if not self.state.groups:
            return
        keep = self._widths(allocator="uniform", scores=None)
        grown = self._grown_widths(keep, self.config.regrow_ratio, allocator="uniform", scores=None)
        initial_scores = INITIAL_SCORERS[self.config.initial_scorer]
        scores = [initial_scores(self.state, group, width) for group, width in zip(self.state.groups, grown)]
        self.state.set_masks(masks_of_widths(self.state.groups, grown, scores))
        self.state.apply()

    @property
    def width_multiple(self) -> int:
        """The channel multiple widths round to: ``width_multiple``, and the budget's runtime's own (a latency
        budget's)."""
        return math.lcm(self.config.width_multiple, self.budget.width_multiple)

    # -------------------------------------------------------------------------------- allocation
    def _widths(self, *, allocator: str, scores) -> list[int]:
        """Keep widths k_g at the final budget."""
        scores = scores or [None] * len(self.problem.units)
        return allocate(self.problem, allocator=allocator, scores=scores, cost_target=self.budget.target(),
                        cost_of=lambda w: self.budget.cost(masks_of_widths(self.state.groups, w, scores)),
                        nearest=self.budget.nearest)

    def _grown_widths(self, keep: list[int], delta: float, *, allocator: str, scores) -> list[int]:
        """Keep-plus-regrow widths m_g: the same ranking admitting delta of all channels more."""
        if delta <= 0:
            return list(keep)
        total = sum(g.channels for g in self.state.groups)
        target = self.problem.channels(keep) + delta * total
        grown = allocate(self.problem, allocator=allocator, scores=scores or [None] * len(keep), keep_channels=target)
        return [max(k, m) for k, m in zip(keep, grown)]

    # ----------------------------------------------------------------------------- public API
    def step(self) -> bool:
        """Advance the schedule by one unit; explore if it says so. Returns True when it explored."""
        self.t += 1
        if self.schedule.is_explore_step(self.t) and self.state.groups:
            self.explore()
            return True
        if self._hook is None:  # with optimizer=, the step hook has just re-applied them
            self.apply_masks()
        return False

    def apply_masks(self) -> None:
        """Re-zero masked channels (weights, biases, norm scale and shift)."""
        self.state.apply()

    @torch.no_grad()
    def explore(self) -> None:
        """One prune-regrow step at the current schedule position."""
        if not self.state.groups:
            return
        delta = self.schedule.regrow_factor(self.t, self.config.regrow_ratio)
        old_masks = self.state.masks
        # 1. Allocation: rank |gamma| (weighed as the allocator does); inactive units by their most-recently-used
        # value (or 0).
        allocator = self.config.allocator
        scores = ALLOCATORS[allocator].weigh(self._gamma_scores(old_masks), self.budget.relative_unit_costs)
        keep = self._widths(allocator=allocator, scores=scores)
        grown = self._grown_widths(keep, delta, allocator=allocator, scores=scores)
        # 2. Pruning inside each group: column subset selection among the active units.
        kept_sets = []
        for group, mask, width in zip(self.state.groups, old_masks, keep):
            active = mask.nonzero().flatten()
            if width >= len(active):
                kept_sets.append(active)
                continue
            filters = self.state.unit_filters(group)
            filters = filters[:, active.to(filters.device)]
            kept_sets.append(active[top_k_indices(self.score(filters, width).cpu(), width)])
        # 3. Inactive units get their most-recently-used values back (and fresh optimizer state).
        self.state.restore_inactive(self.optimizer)
        # 4. Regrowth among the units not kept, from their restored values.
        new_masks = []
        for group, kept, width in zip(self.state.groups, kept_sets, grown):
            mask = torch.zeros(group.units, dtype=torch.bool)
            mask[kept] = True
            count = width - len(kept)
            if count > 0:
                mask[self.sample(self.state.unit_filters(group), kept, count, self.generator)] = True
            new_masks.append(mask)
        # 5. Snapshot (after restore, before masking), then mask.
        new_masks = _agree_across_ranks(new_masks)
        self.state.take_snapshot()
        self.state.set_masks(new_masks)
        self.state.apply()

    def _gamma_scores(self, masks: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Per group: |gamma| of its active units and, for inactive ones, their most-recently-used |gamma| (or 0
        without ``reallocate``); None for a group without a norm layer."""
        scores = []
        for group, mask in zip(self.state.groups, masks):
            now = self.state.unit_gammas(group)
            if now is None:
                scores.append(None)
                continue
            mru = self.state.unit_gammas(group, from_snapshot=True) if self.config.reallocate else torch.zeros_like(now)
            scores.append(torch.where(mask, now, mru))
        return scores

    @property
    def groups_summary(self) -> list[dict]:
        """Per group: name, channels, kept width (for logs and width plots)."""
        widths = {g.name: int(m.sum()) * g.tile for g, m in zip(self.state.groups, self.state.masks)}
        return [{"group": g.name, "channels": g.channels, "width": widths.get(g.name, g.channels),
                 "prunable": g.prunable, **({} if g.prunable else {"reason": g.skip_reason})}
                for g in self.groups]

    def sparsity(self) -> float:
        """Fraction of prunable channels currently masked."""
        total = sum(g.channels for g in self.state.groups)
        if total == 0:
            return 0.0
        kept = sum(int(m.sum()) * g.tile for g, m in zip(self.state.groups, self.state.masks))
        return 1 - kept / total

    def macs(self) -> int:
        return self.cost.macs(self.state.masks)

    def latency_ms(self) -> float | None:
        """The current sub-model's predicted latency (milliseconds, from ``latency_model``), or None without one."""
        return None if self.latency_model is None else self._latency_of(self.state.masks if self.state.groups else None)

    def dense_latency_ms(self) -> float | None:
        return None if self.latency_model is None else self._latency_of(None)

    def _latency_of(self, masks: list[torch.Tensor] | None) -> float:
        return float(self.latency_model.predict(self.cost.layer_channels(masks)))

    def dense_macs(self) -> int:
        return self.cost.dense_macs

    def params(self) -> int:
        return self.cost.params(self.state.masks)

    def dense_params(self) -> int:
        return self.cost.dense_params

    def compact(self) -> nn.Module:
        """A new, physically smaller model; in eval mode its output equals the masked model's."""
        self.apply_masks()
        removed = removed_channels(self.state.groups, self.state.masks)
        small = prune_copy(self.model, removed, self.example_inputs)
        earlier = getattr(self.model, "chex_recipe", None)  # a compact model compacted again: one recipe
        if earlier is not None:
            removed = compose_removed(earlier["removed"], removed, self.model)
        recipe = make_recipe(self.model, removed, tuple(first_input(self.example_inputs).shape), **self._recipe_args)
        if recipe is not None:
            small.chex_recipe = recipe
        return small

    # ------------------------------------------------------------------------------ resumability
    def state_dict(self) -> dict:
        return {"t": self.t, "config": self.config.to_dict(),
                "masks": {g.name: m.clone() for g, m in zip(self.state.groups, self.state.masks)},
                "snapshot": {k: v.detach().cpu().clone() for k, v in self.state.snapshot.items()},
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        names = [g.name for g in self.state.groups]
        if sorted(state["masks"]) != sorted(names):
            raise ValueError("explorer state does not match this model's channel groups "
                             f"(saved {len(state['masks'])} groups, this model has {len(names)})")
        self.t = int(state["t"])
        self.state.snapshot = {k: v.clone() for k, v in state["snapshot"].items()}
        self.state.set_masks([state["masks"][n].to(torch.bool) for n in names])
        self.generator.set_state(state["generator"])
        self.apply_masks()

    def remove_hooks(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _agree_across_ranks(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Under torch.distributed every rank takes rank 0's masks (sampling draws could differ)."""
    dist = torch.distributed
    if not masks or not (dist.is_available() and dist.is_initialized()):
        return masks
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flat = torch.cat(masks).to(device=backend_device, dtype=torch.uint8)
    dist.broadcast(flat, src=0)
    return [part.bool().cpu() for part in flat.split([m.numel() for m in masks])]
