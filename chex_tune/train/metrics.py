"""What a run measures: every metric name chex-tune reports, defined once with how it reads.

A ``Metric`` knows its name (the key in ``metrics.json``, in reports to Ray and Optuna, and in MLflow),
the direction that is better (None where neither is), whether it is a cost that fronts are ordered by,
and how people read it: a table cell, an inline value, a plot axis. ``METRICS`` holds chex-tune's own;
a user's own metric (``val_map``, say) is registered the moment it is named in the objectives
(``metric(name)``). The names are module constants so code never spells a metric twice: write
``row.metrics[VAL_ACC]``, not ``row.metrics["val_acc"]``.

This sits in ``train`` because the built-in loop produces and prints these metrics; ``tuning`` reads the
same registry for objectives, tables, plots, early stopping and export bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chex_tune.units import format_count

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Metric:
    name: str
    mode: str | None = None  # "max" or "min": the one sensible direction; None: either (a user's own metric)
    cost: bool = False  # what a front is ordered by and plotted against (MACs, params, latency)
    objective: bool = True  # may be optimized (test_acc may not: the test set is never selected on)
    style: str = "number"  # "fraction" (accuracies), "count" (MACs, params), "ms" or "number"
    title: str = ""  # table column title
    axis: str = ""  # plot axis label, in the unit of ``axis_scale * value``
    axis_scale: float = 1.0

    def text(self, value) -> str:
        """Inline, as in progress lines and messages: 33.4M, 0.8123, 2.5 ms."""
        if value is None:
            return "-"
        if self.style == "count":
            return format_count(value)
        if self.style == "ms":
            return f"{value:.3g} ms"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"

    def cell(self, value) -> str:
        """In a table column: counts with two decimals, latency in ms to the microsecond."""
        if value is None:
            return "-"
        if self.style == "count":
            return format_count(value, ".2f")
        if self.style == "ms":
            return f"{value:.3f}"
        if self.style == "fraction":
            return f"{value:.4f}"
        return f"{value:.4g}"


METRICS: dict[str, Metric] = {}


def define(name: str, **fields) -> str:
    """Register chex-tune's own metric; returns its name (the constant the code uses)."""
    METRICS[name] = Metric(name, **fields)
    return name


def metric(name: str) -> Metric:
    """The registered metric, or a new one for a user's own name (no direction of its own, read as a number)."""
    if name not in METRICS:
        METRICS[name] = Metric(name, title=name, axis=name)
    return METRICS[name]


# The final metrics of a trial, and its columns in tables (in this order).
VAL_ACC = define("val_acc", mode="max", style="fraction", title="val acc", axis="validation accuracy (%)",
                 axis_scale=100.0)
TEST_ACC = define("test_acc", mode="max", objective=False, style="fraction", title="test acc",
                  axis="test accuracy (%)", axis_scale=100.0)
MACS = define("macs", mode="min", cost=True, style="count", title="MACs", axis="MACs (millions)", axis_scale=1e-6)
PARAMS = define("params", mode="min", cost=True, style="count", title="params", axis="parameters (millions)",
                axis_scale=1e-6)
# From the run's latency table (deterministic) when it has one (latency_runtime, or a latency budget); otherwise the
# finished model timed in PyTorch eager on the CPU that trained it
LATENCY_MS = define("latency_ms", mode="min", cost=True, style="ms", title="latency ms", axis="latency (ms)")
TABLE_COLUMNS = (VAL_ACC, TEST_ACC, MACS, PARAMS, LATENCY_MS)

MACS_RATIO = define("macs_ratio", mode="min", cost=True, title="MACs / dense", axis="fraction of dense MACs")
SPARSITY = define("sparsity", mode="max", title="sparsity", axis="channel sparsity")
DENSE_MACS = define("dense_macs", style="count", title="dense MACs")
DENSE_PARAMS = define("dense_params", style="count", title="dense params")
# With a MACs budget, what the compact model will cost: known from the first epoch, while the masked model's
# MACs still move with regrowth (early stopping reads a trial's MACs from it at a rung)
MACS_BUDGET = define("macs_budget", style="count", title="MACs budget")
# Under a latency budget, what the compact model's latency_ms will be (the budget), as macs_budget for MACs
LATENCY_BUDGET_MS = define("latency_budget_ms", style="ms", title="latency budget ms")
# The finished model timed end to end in its latency table's runtime, beside the table's latency_ms
LATENCY_MEASURED_MS = define("latency_measured_ms", style="ms", title="measured latency ms")
VAL_ACC_MASKED = define("val_acc_masked", style="fraction", title="val acc (masked)")

# Per epoch
EPOCH = "epoch"  # the step every per-epoch metric is logged at, not a metric itself
TRAIN_LOSS = define("train_loss", mode="min", title="train loss")
LR = define("lr", title="learning rate")
EPOCH_SECONDS = define("epoch_seconds", title="epoch s")
TRAIN_SECONDS = define("train_seconds", title="train s")

# How a finished model's latency was got (in a built-in trial's final report: is a latency gap noise?)
LATENCY_SPREAD = define("latency_spread", objective=False, title="latency spread")  # IQR / median of the timing
LATENCY_IQR_MS = define("latency_iqr_ms", objective=False, style="ms", title="latency IQR ms")
LATENCY_THREADS = define("latency_threads", objective=False, title="latency threads")
LATENCY_BATCH_SIZE = define("latency_batch_size", objective=False, title="latency batch")
LATENCY_WIDTH_MULTIPLE = define("latency_width_multiple", objective=False, title="width multiple")
EPOCHS = define("epochs", objective=False, title="epochs")
TRIAL_SECONDS = define("trial_seconds", objective=False, title="trial s")  # data, training, eval and files

# What the built-in trainable reports that can be optimized.
BUILTIN_OBJECTIVES = (VAL_ACC, MACS, PARAMS, LATENCY_MS)


def cost_metrics(*, macs: float, params: float, sparsity: float, macs_budget: float | None = None,
                 latency_ms: float | None = None, latency_budget_ms: float | None = None) -> dict:
    """A model's costs as every report carries them (``macs_budget`` only under a MACs budget, ``latency_ms`` with a
    latency table, ``latency_budget_ms`` under a latency budget)."""
    costs = {MACS: macs, PARAMS: params, SPARSITY: sparsity}
    optional = {MACS_BUDGET: macs_budget, LATENCY_MS: latency_ms, LATENCY_BUDGET_MS: latency_budget_ms}
    return {**costs, **{name: value for name, value in optional.items() if value is not None}}


def final_costs(model: nn.Module, inputs, *, dense_macs: float, dense_params: float) -> dict:
    """The compact model's MACs (per sample of ``inputs``) and params, beside the dense model's."""
    from chex_tune.core.flops import count_macs, count_params

    macs = count_macs(model, inputs)
    return {MACS: macs, PARAMS: count_params(model), DENSE_MACS: dense_macs, DENSE_PARAMS: dense_params,
            MACS_RATIO: macs / dense_macs if dense_macs else float("nan")}
