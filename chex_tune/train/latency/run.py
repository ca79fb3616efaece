"""A training run's latency, chosen once: a latency table of its target (with a latency runtime or a latency budget)
or, without one, the finished model timed in PyTorch eager on the CPU that trained it.

The loop asks it three things: ``table`` (the explorer's latency model, None in eager), ``report`` (per epoch) and
``measure`` (once, at the end: a ``Latency``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from chex_tune.config import RunConfig
from chex_tune.train.latency.runtimes import RUNTIMES
from chex_tune.train.latency.table import LatencyTable, table_for
from chex_tune.train.latency.target import LatencyTarget
from chex_tune.train.metrics import LATENCY_BUDGET_MS, LATENCY_MS
from chex_tune.train.result import Latency


class EagerLatency:
    """No table: nothing predicted per epoch, the finished model timed in its target's runtime (PyTorch eager)."""

    table: LatencyTable | None = None

    def __init__(self, target: LatencyTarget):
        self.target = target

    def report(self, explorer, model: nn.Module) -> dict:
        return {}

    def measure(self, model: nn.Module) -> Latency:
        """``model`` (on the CPU) timed end to end in the target's runtime."""
        target = self.target
        measured, spread = RUNTIMES[target.runtime].model_ms(model, target)
        return Latency(latency_ms=measured, spread=spread, iqr_ms=spread * measured, threads=target.threads,
                       batch_size=target.batch_size, device=target.device, runtime=target.runtime)


class TableLatency(EagerLatency):
    """A latency table of the run's target: the predicted latency every epoch (and the budget under a latency
    budget), and the finished model's prediction with its measurement in the table's runtime beside it."""

    def __init__(self, target: LatencyTarget, table: LatencyTable, config: RunConfig):
        super().__init__(target)
        self.table, self.chex = table, config.chex

    def report(self, explorer, model: nn.Module) -> dict:
        """The current model's predicted latency (the masked one's while an explorer runs) and, under a latency
        budget, the budget: both in milliseconds."""
        current = explorer.latency_ms() if explorer is not None else self.table.predict_model(model)
        return {LATENCY_MS: current, LATENCY_BUDGET_MS: self.chex.latency_budget(self.table.dense_ms)}

    def measure(self, model: nn.Module) -> Latency:
        timed = super().measure(model)  # in the table's runtime
        return dataclasses.replace(timed, latency_ms=self.table.predict_model(model), measured_ms=timed.latency_ms,
                                   width_multiple=self.table.width_multiple)


def run_latency(config: RunConfig, example: torch.Tensor, model: nn.Module,
                log: Callable[[str], None]) -> EagerLatency:
    """The run's latency: a table (read, or built once per node) with a latency runtime or budget, else eager."""
    settings = config.train
    runtime = settings.latency_runtime or ("onnxruntime" if config.chex.budget_kind.needs_latency_model else None)
    target = LatencyTarget(runtime=runtime or "torch", input_shape=tuple(example.shape[1:]),
                           batch_size=settings.latency_batch_size,
                           threads=settings.latency_threads or torch.get_num_threads())
    if runtime is None:
        return EagerLatency(target)
    log(f"latency table: {target.describe()}")
    table = table_for(copy.deepcopy(model).cpu().float().eval(), target,
                      progress=lambda message: log(f"  latency table: {message}"))
    return TableLatency(target, table, config)
