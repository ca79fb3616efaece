"""The dense reference and ``--max-drop``: the trained start evaluated once, and how far below it a trial may fall.

``dense_reference`` evaluates a trained start as the trials load it (no training): its val and test accuracy, MACs
and params. A family from ``--init`` prints it under its table; a sweep or a family with ``--max-drop PT`` measures
every trial against its val accuracy (without ``--init`` a family's dense member is the reference). ``MaxDrop`` is
that rule: a trial more than PT percentage points below the reference is *beyond* it, kept as a finished run (tag
``chex.beyond_max_drop=true``) but left off the front. The parent run of the sweep or family records the rule (param
``max_drop``, metric ``dense_val_acc``), so whoever ranks its trials later (``chex-tune pareto``) applies the same
rule. Nothing heavy is imported here until a model is evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chex_tune.train.metrics import MACS, MACS_RATIO, PARAMS, TEST_ACC, VAL_ACC

MAX_DROP_PARAM = "max_drop"  # on the parent run: the rule's points ("None" when the sweep had none)
REFERENCE_METRIC = "dense_val_acc"  # on the parent run: the reference's val accuracy (a fraction, as val_acc)
BEYOND_TAG = "chex.beyond_max_drop"  # "true" on a finished trial more than max_drop points below the reference
CONSTRAINT = "max_drop"  # the Optuna constraint's name: points beyond the rule (> 0: infeasible)


def check_max_drop(value) -> float | None:
    """``--max-drop`` as a float of percentage points >= 0 (None: no rule)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"--max-drop must be a number of percentage points >= 0 (like 1.5: at most 1.5 points "
                         f"below the dense model's val accuracy), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MaxDrop:
    """At most ``points`` percentage points of val accuracy below ``reference`` (the dense model's, a fraction)."""

    points: float
    reference: float

    def drop(self, val_acc: float) -> float:
        """Points below the reference (negative: above it); rounded so 0.5 - 0.49 is 1 point, not 1.0000000000000009."""
        return round((self.reference - val_acc) * 100, 9)

    def excess(self, val_acc: float) -> float:
        """Points beyond the rule: > 0 when ``val_acc`` is too far below (Optuna's constraint value)."""
        return round(self.drop(val_acc) - self.points, 9)

    def beyond(self, val_acc: float | None) -> bool:
        return val_acc is not None and not math.isnan(val_acc) and self.excess(val_acc) > 0

    def describe(self) -> str:
        return f"--max-drop {self.points:g} (dense val_acc {self.reference:.4f})"

    def record(self, client, parent_run_id: str) -> None:
        """The reference on the sweep's or family's parent run (its param max_drop is logged with the others)."""
        client.log_metric(parent_run_id, REFERENCE_METRIC, self.reference)

    @classmethod
    def of_run(cls, run) -> MaxDrop | None:
        """The rule a parent run recorded, or None (no max_drop, or no reference logged yet)."""
        points = run.data.params.get(MAX_DROP_PARAM)
        reference = run.data.metrics.get(REFERENCE_METRIC)
        if points in (None, "None", "") or reference is None:
            return None
        return cls(float(points), float(reference))


def dense_reference(settings: dict, start: str) -> dict:
    """The trained start's own val and test accuracy, MACs and params: loaded as the trials load it and evaluated
    once, with no training, on the validation split the trials use (``settings``: the run settings they share)."""
    from chex_tune.config import RunConfig
    from chex_tune.core.flops import count_macs, count_params
    from chex_tune.train.data import load_data
    from chex_tune.train.evaluate import evaluate
    from chex_tune.train.loop import resolve_device
    from chex_tune.train.models import resolve_stem
    from chex_tune.train.weights import start_model

    config = RunConfig.from_dict({**settings, "init": start, "sparsity": 0.0, "macs_target": None,
                                  "latency_target": None}).train
    device = resolve_device(config.device)
    data = load_data(config, device)
    model, dense_macs, _ = start_model(config, data, resolve_stem(config.stem, data.image_size))
    model = model.to(device).eval()
    macs = count_macs(model, data.example_input()[:1])
    return {VAL_ACC: evaluate(model, data, "val"), TEST_ACC: evaluate(model, data, "test"), MACS: macs,
            PARAMS: count_params(model), MACS_RATIO: macs / dense_macs}
