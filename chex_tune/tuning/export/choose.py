"""Choosing the trial to export: a bound on one metric (``--max-macs``, ``--max-latency-ms``, ``--min-acc``), met by
the best member of the accuracy/cost front, or a run named with ``--run``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from chex_tune.core import checks
from chex_tune.train.metrics import LATENCY_MS, MACS, VAL_ACC
from chex_tune.tuning.objectives import format_metric
from chex_tune.tuning.pareto import non_dominated_ranks
from chex_tune.tuning.protocol import TrialRow
from chex_tune.units import parse_count

SHOWN_CANDIDATES = 3  # nearest misses listed when no run meets a constraint


def parse_accuracy(text) -> float:
    """A fraction (``0.9``) or a percentage (``90%``), as a fraction in (0, 1]."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ValueError(f"--min-acc must be a validation accuracy in (0, 1] like 0.9 (or 90%), got {text!r}")
    return value


def parse_milliseconds(text) -> float:
    """A latency bound in milliseconds (``2.5``, or ``2.5ms``), as a positive number."""
    return checks.parse_milliseconds(text, "--max-latency-ms must be a positive number of milliseconds like 2.5")


@dataclass(frozen=True)
class Constraint:
    """A bound on one logged metric: ``metric <= bound`` (costs) or ``metric >= bound`` (accuracy)."""

    metric: str  # MACS, LATENCY_MS or VAL_ACC
    bound: float
    upper: bool  # True: the metric must stay at or below the bound

    @classmethod
    def parse(cls, *, max_macs=None, max_latency_ms=None, min_acc=None) -> Constraint:
        given = [(name, value) for name, value in (("max_macs", max_macs), ("max_latency_ms", max_latency_ms),
                                                   ("min_acc", min_acc)) if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --max-macs, --max-latency-ms, --min-acc (or --run)")
        if max_macs is not None:
            return cls(MACS, parse_count(max_macs, "--max-macs"), True)
        if max_latency_ms is not None:
            return cls(LATENCY_MS, parse_milliseconds(max_latency_ms), True)
        return cls(VAL_ACC, parse_accuracy(min_acc), False)

    @property
    def cost(self) -> str:
        """The cost the choice trades accuracy against (MACs for an accuracy floor)."""
        return MACS if self.metric == VAL_ACC else self.metric

    @property
    def objectives(self) -> str:
        """The front the choice is made on: accuracy against the constrained cost."""
        return f"{VAL_ACC}:max,{self.cost}:min"

    def met(self, row: TrialRow) -> bool:
        value = row.metrics[self.metric]
        return value <= self.bound if self.upper else value >= self.bound

    def miss(self, row: TrialRow) -> float:
        """How far the row is from meeting the bound (0 when it does)."""
        value = row.metrics[self.metric]
        return max(0.0, value - self.bound if self.upper else self.bound - value)

    def __str__(self) -> str:
        return f"{self.metric} {'<=' if self.upper else '>='} {format_metric(self.metric, self.bound)}"


def describe(row: TrialRow, metrics=(VAL_ACC, MACS, LATENCY_MS)) -> str:
    return ", ".join(f"{name} {format_metric(name, row.metrics.get(name))}" for name in metrics)


def choose(trials, constraint: Constraint) -> tuple[TrialRow, str]:
    """The front member that best satisfies ``constraint``, and why it was chosen.

    The front is re-ranked here on val_acc against the constraint's cost, whatever ``trials`` was read
    with (reading it with ``constraint.objectives`` makes read_trials name a metric nobody logged). A
    cost bound picks the most accurate member within it (the lower cost breaks ties); an accuracy floor
    picks the cheapest member that reaches it, since the most accurate run would ignore the floor.
    """
    ranked = rank_for(trials, constraint)
    front = [row for row in ranked if row.rank == 0]
    meeting = [row for row in front if constraint.met(row)]
    if not meeting:
        nearest = sorted(front, key=constraint.miss)[:SHOWN_CANDIDATES]
        shown = dict.fromkeys((constraint.metric, VAL_ACC, constraint.cost))  # the bound's metric first
        listed = "; ".join(f"run {row.run_id} ({describe(row, shown)})" for row in nearest)
        raise ValueError(f"no trial of experiment {trials.experiment!r} on the {VAL_ACC}/{constraint.cost} front has "
                         f"{constraint}; nearest: {listed or '(no finished trials)'}")
    if constraint.upper:
        best = min(meeting, key=lambda r: (-r.metrics[VAL_ACC], r.metrics[constraint.cost], r.run_id))
        why = f"the most accurate of {len(meeting)} of {len(front)} front members with {constraint}"
    else:
        best = min(meeting, key=lambda r: (r.metrics[MACS], -r.metrics[VAL_ACC], r.run_id))
        why = f"the cheapest (MACs) of {len(meeting)} of {len(front)} front members with {constraint}"
    return best, why


def rank_for(trials, constraint: Constraint) -> list[TrialRow]:
    """Rows re-ranked on the accuracy/cost front (failed runs, runs missing either metric and runs beyond the sweep's
    --max-drop: rank -1)."""
    names = (VAL_ACC, constraint.cost)  # the constrained metric is one of the two
    values = [[row.value(n) if row.finished and not row.beyond_max_drop else math.nan for n in names]
              for row in trials.rows]
    ranks = non_dominated_ranks(values, [True, False]) if values else []
    return [replace(row, rank=int(rank)) for row, rank in zip(trials.rows, ranks)]


def find_run(trials, run_id: str) -> tuple[TrialRow, str]:
    """The finished trial ``run_id`` of the experiment, whatever its rank."""
    row = next((r for r in trials.rows if r.run_id == run_id), None)
    if row is None:
        raise ValueError(f"run {run_id!r} is not a trial of experiment {trials.experiment!r} "
                         f"(sweeps read: {', '.join(s['name'] for s in trials.sweeps)})")
    if not row.finished:
        raise ValueError(f"run {run_id} did not finish (status {row.status}"
                         f"{': ' + row.error if row.error else ''}); it has no model to export")
    return row, "asked for with --run"
