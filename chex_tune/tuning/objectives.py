"""Objectives: a metric name and a direction, ``"val_acc:max"`` or a user's own ``"val_map:max"``.

Any metric a trial reports can be an objective, and a sweep has any number of them. The metrics
chex-tune itself reports have one sensible direction each (``KNOWN_MODES``): the other direction is a
typo that would silently invert a sweep, so it is rejected. ``test_acc`` is never an objective (the
test set is for the final report only).

The cost metrics (``COST_METRICS``) are what a front is ordered by and plotted against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from chex_tune.units import format_count

KNOWN_MODES = {"val_acc": "max", "macs": "min", "params": "min", "latency_ms": "min", "sparsity": "max",
               "macs_ratio": "min"}
COST_METRICS = ("macs", "params", "latency_ms", "macs_ratio")
DEFAULT_OBJECTIVES = ("val_acc:max", "macs:min")
_NAME = re.compile(r"[A-Za-z_][\w./-]*")  # what MLflow, Ray and Optuna all accept as a metric name


@dataclass(frozen=True)
class Objective:
    name: str  # a metric the trainable reports
    mode: str  # "max" or "min"

    def __post_init__(self) -> None:
        if self.name == "test_acc":
            raise ValueError("test_acc cannot be an objective: the test set is evaluated once at the end of each "
                             "trial and never used for selection (selecting on it would overfit the test set); "
                             "use val_acc")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"objective metric {self.name!r} is not a metric name (letters, digits, '_', '.', "
                             "'/', '-'; starting with a letter or '_')")
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective {self.name}: mode must be 'max' or 'min', got {self.mode!r}")
        known = KNOWN_MODES.get(self.name)
        if known is not None and self.mode != known:
            raise ValueError(f"objective {self.name}:{self.mode} points the wrong way; use {self.name}:{known}")

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
    objectives = []
    for item in items:
        if isinstance(item, Objective):
            objective = item
        elif isinstance(item, str):
            name, sep, mode = (part.strip() for part in item.strip().partition(":"))
            if not sep:
                hint = f"{name}:{KNOWN_MODES[name]}" if name in KNOWN_MODES else f"{name}:max or {name}:min"
                raise ValueError(f"objective {name!r} needs a mode: write {hint}")
            objective = Objective(name, mode)
        else:
            raise ValueError(f"objective {item!r} must be a string like 'val_acc:max'")
        if allowed is not None and objective.name not in allowed:
            raise ValueError(f"unknown objective metric {objective.name!r}; choose from: {', '.join(allowed)}")
        objectives.append(objective)
    if not objectives:
        raise ValueError("at least one objective is needed, e.g. val_acc:max")
    names = [objective.name for objective in objectives]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"objective(s) listed more than once: {', '.join(twice)}")
    return tuple(objectives)


def cost_objective(objectives) -> Objective | None:
    """What a front is ordered by: the first cost metric (MACs, params, latency), else the first minimised one."""
    objectives = tuple(objectives)
    return next((o for o in objectives if o.name in COST_METRICS), None) or next(
        (o for o in objectives if o.mode == "min"), None)


def quality_objective(objectives) -> Objective:
    """The objective plotted against the cost: the first one that is not the cost."""
    objectives = tuple(objectives)
    cost = cost_objective(objectives)
    return next((o for o in objectives if o != cost), objectives[0])


def format_metric(metric: str, value) -> str:
    """A trial metric as people read it: MACs and params as counts (33.4M, 740K), latency in ms, the rest to 4
    digits."""
    if value is None:
        return "-"
    if metric in ("macs", "params"):
        return format_count(value)
    if metric == "latency_ms":
        return f"{value:.3g} ms"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
