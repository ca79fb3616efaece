"""A training run's latency: its target and table (when it has a latency runtime or a latency budget), the
predicted latency it reports every epoch, and how its finished model is measured.

Kept apart from the training loop, which only asks for ``table`` (the explorer's latency model), ``report`` (per
epoch) and ``measure`` (once, at the end).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from chex_tune.config import RunConfig
from chex_tune.train.latency.runtimes import RUNTIMES
from chex_tune.train.latency.table import LatencyTable, table_for
from chex_tune.train.latency.target import LatencyTarget


class RunLatency:
    def __init__(self, table: LatencyTable, target: LatencyTarget, config: RunConfig):
        self.table, self.target, self.chex = table, target, config.chex

    @classmethod
    def of_run(cls, config: RunConfig, example: torch.Tensor, model: nn.Module,
               log: Callable[[str], None]) -> RunLatency | None:
        """The run's table (read, or built once per node), or None without a latency runtime or budget."""
        settings = config.train
        runtime = settings.latency_runtime or ("onnxruntime" if config.chex.budget == "latency" else None)
        if runtime is None:
            return None
        target = LatencyTarget(runtime=runtime, input_shape=tuple(example.shape[1:]),
                               batch_size=settings.latency_batch_size,
                               threads=settings.latency_threads or torch.get_num_threads())
        log(f"latency table: {target.describe()}")
        table = table_for(copy.deepcopy(model).cpu().float().eval(), target,
                          progress=lambda message: log(f"  latency table: {message}"))
        return cls(table, target, config)

    def report(self, explorer, model: nn.Module) -> dict:
        """The current model's predicted latency (the masked one's while an explorer runs) and, under a latency
        budget, the budget: both in milliseconds."""
        current = explorer.latency_ms() if explorer is not None else self.table.predict_model(model)
        return {"latency_ms": current, "latency_budget_ms": self.chex.latency_budget(self.table.dense_ms)}

    def measure(self, model: nn.Module) -> dict:
        """The finished model (on the CPU): the table's prediction (``latency_ms``) and the model timed end to end in
        the table's runtime beside it (``measured_ms``, ``spread``)."""
        target = self.target
        measured, spread = RUNTIMES[target.runtime].model_ms(model, target)
        return {"latency_ms": self.table.predict_model(model), "measured_ms": measured, "spread": spread,
                "iqr_ms": spread * measured, "device": target.device, "batch_size": target.batch_size,
                "threads": target.threads, "runtime": target.runtime, "width_multiple": self.table.width_multiple}
