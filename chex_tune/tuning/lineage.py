"""Trials that inherit: in a sweep from a trained model, a trial at a MACs budget starts from a finished trial of the
same sweep with more MACs instead of from the trained model itself, so a small budget inherits the fine-tuning of a
larger one, as a family's cascade does.

``Lineage`` is a Ray Tune callback on the driver: it keeps every finished trial's MACs, objectives and files (its
checkpoint: ``compact.pt`` and the rest), read from the trials Ray holds at each step, so a restored sweep
(``--resume``) knows its finished trials again. When the searcher suggests a trial, ``with_parent`` adds the chosen
parent to its config (``chex_parent``: the compact model's path and the parent's trial id); a trial with no parent
yet (none finished above its budget) starts from the trained model. The trial records its parent as lineage, and
the MLflow run as the tag ``chex.parent_run``.

How a parent is chosen is a rule from ``PARENT_RULES``: ``nearest`` (the default: the finished trial with the fewest
MACs above the budget, among those on the front of what finished, the cascade's step) or ``best`` (the most accurate
above the budget).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from chex_tune.train.artifacts import COMPACT
from chex_tune.train.metrics import MACS_RATIO, VAL_ACC
from chex_tune.tuning.pareto import pareto_front
from chex_tune.tuning.protocol import FINAL_KEY, PARENT_KEY, settings_in


@dataclass(frozen=True)
class Finished:
    """A finished trial a later one may start from."""

    trial_id: str
    macs_ratio: float  # its MACs as a fraction of the dense model's
    val_acc: float  # its accuracy (val_acc for the built-in loop; a user's trainable: its first maximised objective)
    compact: str  # its compact.pt


def nearest(candidates: list[Finished]) -> Finished:
    """The smallest model on the front of the candidates (accuracy up, MACs down): one step down a cascade."""
    front = pareto_front([[c.val_acc, c.macs_ratio] for c in candidates], [True, False])
    return min((candidates[i] for i in front), key=lambda c: (c.macs_ratio, -c.val_acc))


def best(candidates: list[Finished]) -> Finished:
    """The most accurate candidate (the smaller one on a tie)."""
    return max(candidates, key=lambda c: (c.val_acc, -c.macs_ratio))


PARENT_RULES: dict[str, Callable[[list[Finished]], Finished]] = {"nearest": nearest, "best": best}


def _ray_callback_base():
    from ray import tune

    return tune.Callback


class Lineage(_ray_callback_base()):
    """Finished trials of one sweep, and the parent each new trial starts from (see the module docstring)."""

    def __init__(self, fixed: Mapping | None = None, *, rule: str = "nearest", max_drop=None, accuracy: str = VAL_ACC):
        if rule not in PARENT_RULES:
            raise ValueError(f"unknown parent rule {rule!r}; choose one of: {', '.join(PARENT_RULES)}")
        self.fixed = dict(fixed or {})  # the settings every trial shares (a fixed macs_target among them)
        self.rule = rule
        self.max_drop = max_drop  # the sweep's --max-drop (reference.MaxDrop): a trial beyond it is no parent
        self.accuracy = accuracy  # the metric a parent is ranked on
        self.finished: dict[str, Finished] = {}
        self.passed_over: set[str] = set()  # trials that ended without being a possible parent

    def on_step_begin(self, iteration, trials, **info):
        for trial in trials:
            if trial.trial_id not in self.finished and trial.trial_id not in self.passed_over \
                    and trial.status == "TERMINATED":
                self._keep(trial, settled=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._keep(trial, settled=False)

    def _keep(self, trial, *, settled: bool) -> None:
        """Keep ``trial`` as a possible parent; one that cannot be is passed over once Ray holds it TERMINATED
        (``settled``: its last result and checkpoint are final)."""
        last, checkpoint = trial.last_result or {}, trial.checkpoint
        compact = pathlib.Path(checkpoint.path) / COMPACT if checkpoint is not None else None
        if (not last.get(FINAL_KEY) or compact is None or not compact.exists() or MACS_RATIO not in last
                or self.accuracy not in last  # failed, stopped early, or reports no MACs: no parent
                or self.max_drop is not None and self.max_drop.beyond(float(last[self.accuracy]))):  # ruled out
            if settled:
                self.passed_over.add(trial.trial_id)
            return
        self.finished[trial.trial_id] = Finished(trial.trial_id, float(last[MACS_RATIO]),
                                                 float(last[self.accuracy]), str(compact))

    def parent_for(self, budget: float) -> Finished | None:
        """The parent of a trial at ``budget`` (a fraction of the dense MACs), or None: start from the trained model."""
        candidates = [f for f in self.finished.values() if f.macs_ratio > budget]
        return PARENT_RULES[self.rule](candidates) if candidates else None

    def with_parent(self, config: Mapping) -> dict:
        """``config`` (a trial's, as suggested) with its parent added when it has a MACs budget and one finished."""
        config = dict(config)
        budget = {**self.fixed, **settings_in(config)}.get("macs_target")  # sampled, or fixed for all
        parent = self.parent_for(float(budget)) if budget is not None else None
        if parent is not None:
            config[PARENT_KEY] = {"path": parent.compact, "trial_id": parent.trial_id}
        return config


def check_inheritance(space, init) -> None:
    """An inheriting sweep needs a trained start (its first trials start from it) and a MACs budget (a parent has
    more MACs than its child's budget)."""
    if not init:
        raise ValueError("--inherit needs a trained start: give --init WEIGHTS (the first trials start from it, the "
                         "later ones from finished trials)")
    if "macs_target" not in space.params and space.fixed.get("macs_target") is None:
        raise ValueError(f"--inherit needs a MACs budget: {space.source} has no macs_target (search it, or fix it "
                         "under fixed:); a parent is a finished trial with more MACs than its child's budget")


def ladder_points(space, ladder) -> list[dict]:
    """The ladder's budgets as the first trials: the space's centre at each (Optuna takes whole points)."""
    param = space.params.get("macs_target")
    if param is None or param.choices is not None:
        raise ValueError(f"--ladder sets the first trials' macs_target, which {space.source} does not search as a "
                         "range; search it (macs_target: {low: ..., high: ...})")
    outside = [b for b in ladder if not param.low <= b <= param.high]
    if outside:
        raise ValueError(f"--ladder {','.join(map(str, outside))}: outside the space's macs_target range "
                         f"[{param.low}, {param.high}]")
    return [{**space.midpoint(), "macs_target": budget} for budget in ladder]
