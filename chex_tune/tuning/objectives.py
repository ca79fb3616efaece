"""Objectives: a metric and a direction, ``"val_acc:max"`` or a user's own ``"val_map:max"``.

Any metric a trial reports can be an objective, and a sweep has any number of them. The metrics
chex-tune itself reports have one sensible direction each (``chex_tune.train.metrics``): the other
direction is a typo that would silently invert a sweep, so it is rejected. ``test_acc`` is never an
objective (the test set is for the final report only). Naming a metric of your own in the objectives
registers it, so tables and plots show it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from chex_tune.train.metrics import MACS, TEST_ACC, VAL_ACC, Metric, metric

DEFAULT_OBJECTIVES = (f"{VAL_ACC}:max", f"{MACS}:min")
_NAME = re.compile(r"[A-Za-z_][\w./-]*")  # what MLflow, Ray and Optuna all accept as a metric name


@dataclass(frozen=True)
class Objective:
    name: str  # a metric the trainable reports
    mode: str  # "max" or "min"

    def __post_init__(self) -> None:
        if self.name == TEST_ACC:
            raise ValueError(f"{TEST_ACC} cannot be an objective: the test set is evaluated once at the end of each "
                             "trial and never used for selection (selecting on it would overfit the test set); "
                             f"use {VAL_ACC}")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"objective metric {self.name!r} is not a metric name (letters, digits, '_', '.', "
                             "'/', '-'; starting with a letter or '_')")
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective {self.name}: mode must be 'max' or 'min', got {self.mode!r}")
        known = self.metric.mode
        if known is not None and self.mode != known:
            raise ValueError(f"objective {self.name}:{self.mode} points the wrong way; use {self.name}:{known}")

    @property
    def metric(self) -> Metric:
        return metric(self.name)

    @property
    def direction(self) -> str:
        """Optuna's spelling of the mode."""
        return "maximize" if self.mode == "max" else "minimize"

    @property
    def maximize(self) -> bool:
        return self.mode == "max"

    def __str__(self) -> str:
        return f"{self.name}:{self.mode}"


def parse_objectives(spec, *, allowed: Iterable[str] | None = None) -> tuple[Objective, ...]:
    """``"val_acc:max,macs:min"`` or ``["val_acc:max", "macs:min"]`` (Objective items pass through).

    ``allowed`` limits the names (the built-in trainable reports a fixed set); by default any name goes.
    """
    if spec is None:
        items = []
    elif isinstance(spec, str):
        items = [part for part in spec.split(",") if part.strip()]
    elif isinstance(spec, Objective):
        items = [spec]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise ValueError(f"objectives must be a list like [val_acc:max, macs:min] or a string "
                         f"'val_acc:max,macs:min', got {spec!r}")
    allowed = tuple(allowed) if allowed is not None else None
    objectives = [_objective(item) for item in items]
    for objective in objectives:
        if allowed is not None and objective.name not in allowed:
            raise ValueError(f"unknown objective metric {objective.name!r}; choose from: {', '.join(allowed)}")
    if not objectives:
        raise ValueError(f"at least one objective is needed, e.g. {DEFAULT_OBJECTIVES[0]}")
    names = [objective.name for objective in objectives]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"objective(s) listed more than once: {', '.join(twice)}")
    return tuple(objectives)


def _objective(item) -> Objective:
    if isinstance(item, Objective):
        return item
    if not isinstance(item, str):
        raise ValueError(f"objective {item!r} must be a string like '{DEFAULT_OBJECTIVES[0]}'")
    name, sep, mode = (part.strip() for part in item.strip().partition(":"))
    if not sep:
        known = metric(name).mode if _NAME.fullmatch(name) else None
        hint = f"{name}:{known}" if known else f"{name}:max or {name}:min"
        raise ValueError(f"objective {name!r} needs a mode: write {hint}")
    return Objective(name, mode)


def objectives_text(objectives) -> str:
    """The form a sweep records and a user types: ``val_acc:max,macs:min``."""
    return ",".join(map(str, parse_objectives(objectives)))


def cost_objective(objectives) -> Objective | None:
    """What a front is ordered by: the first cost metric (MACs, params, latency), else the first minimised one."""
    objectives = tuple(objectives)
    return next((o for o in objectives if o.metric.cost), None) or next(
        (o for o in objectives if o.mode == "min"), None)


def quality_objective(objectives) -> Objective:
    """The objective plotted against the cost: the first one that is not the cost."""
    objectives = tuple(objectives)
    cost = cost_objective(objectives)
    return next((o for o in objectives if o != cost), objectives[0])


def format_metric(name: str, value) -> str:
    """A metric's value as people read it inline: MACs and params as counts (33.4M), latency in ms, the rest to 4
    digits."""
    return metric(name).text(value)


def missing_objectives(report, objectives) -> list[str]:
    """The objectives a report lacks as numbers (NaN counts as missing): the one completeness check every part of
    a sweep uses (the searcher guard, the MLflow writer, progress lines, a result's values)."""
    names = [o if isinstance(o, str) else o.name for o in objectives]
    return [name for name in names if not _is_value(report.get(name))]


def _is_value(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN != NaN
