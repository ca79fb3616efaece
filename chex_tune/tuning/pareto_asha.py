"""Pareto-ASHA: asynchronous successive halving for multi-objective sweeps (a Ray Tune trial scheduler).

    scheduler = ParetoAsha("val_acc:max,macs:min", grace=2, eta=3, max_t=9)
    tuner = tune.Tuner(train_fn, tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=...),
                       run_config=tune.RunConfig(callbacks=[RayMlflowCallback(..., early_stop=scheduler)]))

Rungs sit at ``grace * eta**k`` epochs (below ``max_t``). When a trial first reports at or past a rung, its
vector of objectives is recorded there and the trial goes on only if it is among the best
``ceil(n / eta)`` of the ``n`` trials recorded at that rung so far: best by non-dominated sorting, and
inside a front by crowding distance (the front's extremes first, so a cheap-but-weaker trial is kept as
readily as an accurate-but-costly one); a trial tied with the last one kept goes on too. Nothing waits
for a rung to fill: the first trials to arrive always go on, later ones are held against more company
(ASHA's asynchronous promotion, with Pareto rank in place of one metric's quantile).

Any trainable that reports its objectives per epoch works (``epoch`` or Ray's ``training_iteration``,
see ``time_attr``); a report without every objective is let through undecided. A trial's final report
(``chex_final``) is its result, never a rung. The scheduler remembers the trials it stopped
(``stopped``: trial id -> epoch) so the searcher guard and the MLflow callback record them as stopped,
not finished. Our word is "stopped": "pruned" is for channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from chex_tune.train.metrics import EPOCH, LATENCY_BUDGET_MS, LATENCY_MS, MACS, MACS_BUDGET
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, parse_objectives
from chex_tune.tuning.pareto import preference_keys
from chex_tune.tuning.protocol import FINAL_KEY
from chex_tune.tuning.rungs import DEFAULT_ETA, DEFAULT_GRACE, check_rule  # noqa: F401 (re-exported)

# At a rung, a trial's MACs are read from its budget when it reports one: what its compact model will cost
# (Kendall tau 1.0 with the final MACs, against 0.61 for the masked model's MACs after one epoch); its latency
# likewise under a latency budget.
CHEX_RUNG_METRICS = {MACS: MACS_BUDGET, LATENCY_MS: LATENCY_BUDGET_MS}


class ParetoAsha(FIFOScheduler):
    """Stop a trial at a rung when its objectives are outside the best 1/eta of its rung by Pareto rank.

    objectives: any metrics with directions (``"val_acc:max,macs:min"``, a list of ``Objective``);
    grace: epochs before the first rung; eta: the reduction factor (>= 2); max_t: the trials' epochs
    (rungs below it only; None: rungs without end); time_attr: the reported counter of epochs;
    rung_metrics: read an objective from another reported metric at the rungs when a report has it
    (``{"macs": "macs_budget"}``: a CHEX trial's final MACs are its budget, known from the first epoch,
    while the masked model's MACs still move with regrowth; see benchmarks/early_stop.md).
    """

    def __init__(self, objectives=DEFAULT_OBJECTIVES, *, grace: int = DEFAULT_GRACE, eta: int = DEFAULT_ETA,
                 max_t: int | None = None, time_attr: str = EPOCH, rung_metrics: Mapping[str, str] | None = None):
        super().__init__()
        self.objectives = parse_objectives(objectives)
        check_rule(grace, eta)
        if max_t is not None and (isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < 1):
            raise ValueError(f"max_t must be a positive number of epochs or None, got {max_t!r}")
        self.grace, self.eta, self.max_t, self.time_attr = grace, eta, max_t, time_attr
        names = {o.name for o in self.objectives}
        unknown = sorted(set(rung_metrics or {}) - names)
        if unknown:
            raise ValueError(f"rung_metrics names {unknown}, which are not objectives ({', '.join(sorted(names))})")
        self.rung_metrics = dict(rung_metrics or {})
        self.rungs: dict[int, dict[str, tuple[float, ...]]] = {}  # milestone -> trial id -> objective vector
        self.stopped: dict[str, int] = {}  # trial id -> the epoch it was stopped at

    # ------------------------------------------------------------------ the rule (no Ray needed)
    def milestones(self, up_to: float) -> list[int]:
        """The rungs at or below ``up_to`` epochs (and below ``max_t``)."""
        out, milestone = [], self.grace
        while milestone <= up_to and (self.max_t is None or milestone < self.max_t):
            out.append(milestone)
            milestone *= self.eta
        return out

    def vector(self, result: Mapping) -> tuple[float, ...] | None:
        """The objectives read from a report (None when one is missing or not a finite number)."""
        values = []
        for objective in self.objectives:
            value = result.get(self.rung_metrics.get(objective.name), result.get(objective.name))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return None
            values.append(float(value))
        return tuple(values)

    def decide(self, trial_id: str, epoch: float, vector: tuple[float, ...]) -> str:
        """Record ``vector`` at every rung ``epoch`` reached for the first time; STOP if any of them says so."""
        decision = TrialScheduler.CONTINUE
        for milestone in self.milestones(epoch):
            rung = self.rungs.setdefault(milestone, {})
            if trial_id in rung:
                continue
            rung[trial_id] = vector
            if not self.promotable(milestone, trial_id):
                decision = TrialScheduler.STOP
        if decision == TrialScheduler.STOP:
            self.stopped[trial_id] = int(epoch)
        return decision

    def promotable(self, milestone: int, trial_id: str) -> bool:
        """Whether ``trial_id`` is among the best ceil(n / eta) recorded at ``milestone``; a tie with the last
        one kept counts as in (as ASHA lets a value equal to its cutoff go on)."""
        rung = self.rungs[milestone]
        ids = self.rivals(milestone, trial_id)
        keys = preference_keys([rung[i] for i in ids], [o.maximize for o in self.objectives])
        cutoff = sorted(keys)[math.ceil(len(ids) / self.eta) - 1]
        return keys[ids.index(trial_id)] <= cutoff

    def rivals(self, milestone: int, trial_id: str) -> list[str]:
        """The trials ``trial_id`` is ranked among at ``milestone`` (itself included): all that reached it."""
        return list(self.rungs[milestone])

    def stopped_at(self, trial_id: str) -> int | None:
        return self.stopped.get(trial_id)

    # ------------------------------------------------------------------ Ray's calls
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives are the scheduler's own; Ray's single metric does not apply

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL_KEY) or self.time_attr not in result:
            return TrialScheduler.CONTINUE
        vector = self.vector(result)
        if vector is None:
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, result[self.time_attr], vector)

    def debug_string(self) -> str:
        sizes = ", ".join(f"epoch {m}: {len(r)}" for m, r in sorted(self.rungs.items()))
        return f"ParetoAsha(eta={self.eta}, grace={self.grace}): {len(self.stopped)} stopped; rungs {sizes or 'none'}"
