"""What a finished run is: one value the loop returns and every reader takes, instead of a dict read by string.

``RunResult.record()`` is the layout of a run's ``metrics.json`` (unchanged from the dicts earlier releases wrote,
so stores written before still read: ``RunResult.from_record``); ``final_metrics()`` is the numbers a trial's final
report carries. A run's latency is one ``Latency``: the figure fronts use and how it was got, predicted by a latency
table (with the measurement beside it) or measured in PyTorch eager.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from chex_tune.train import metrics as m
from chex_tune.train.artifacts import HISTORY

LATENCY_DETAIL = "latency"  # in metrics.json: the Latency, as a dict
STEM_USED, LATENCY_DEVICE = "stem_used", "latency_device"  # text params of a built-in trial


@dataclass(frozen=True)
class Latency:
    """A finished model's latency (milliseconds per call at ``batch_size``): ``latency_ms`` is the figure fronts use,
    the table's prediction where the run has a latency table (``measured_ms``: the model timed end to end in the
    table's runtime beside it), else the model timed in PyTorch eager (``runtime`` "torch")."""

    latency_ms: float
    spread: float  # IQR / median of the timing
    iqr_ms: float
    threads: int
    batch_size: int
    device: str
    runtime: str = "torch"
    measured_ms: float | None = None
    width_multiple: int | None = None  # the table's runtime's channel multiple

    @property
    def predicted(self) -> bool:
        return self.measured_ms is not None

    def metrics(self) -> dict:
        """Its registered metrics: ``latency_ms``, and beside a prediction ``latency_measured_ms``."""
        return {m.LATENCY_MS: self.latency_ms, **({m.LATENCY_MEASURED_MS: self.measured_ms} if self.predicted else {})}

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: Mapping) -> Latency:
        """Either layout earlier releases wrote (a measurement's extra keys, ``samples`` or ``method``, are dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def describe(self) -> str:
        conditions = f"CPU, batch {self.batch_size}, {self.threads} threads"
        if self.predicted:
            return (f"{self.latency_ms:.3g} ms predicted by the {self.runtime} table, {self.measured_ms:.3g} ms "
                    f"measured (spread {self.spread:.1%}; {conditions})")
        return f"{self.latency_ms:.3g} ms (IQR {self.iqr_ms:.2g} ms; {conditions})"


@dataclass
class RunResult:
    """One finished run of the built-in loop. On the ranks of a data-parallel run other than rank 0, which measure
    nothing, ``latency`` is None."""

    val_acc: float
    test_acc: float
    val_acc_masked: float  # the last epoch's, before compaction
    macs: float
    params: float
    dense_macs: float
    dense_params: float
    latency: Latency | None
    epochs: int
    train_seconds: float
    device: str
    stem: str
    image_size: int
    train_size: int
    val_size: int
    test_size: int
    lineage: dict = field(default_factory=dict)  # runs before lineage was recorded have none
    history: list[dict] = field(default_factory=list)
    mask_digests: list = field(default_factory=list)
    distributed: dict | None = None
    resumed_after_epoch: int | None = None

    @property
    def macs_ratio(self) -> float:
        return self.macs / self.dense_macs if self.dense_macs else float("nan")

    def record(self) -> dict:
        """``metrics.json`` without the history (the writer adds it): the layout every release reads."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in (LATENCY_DETAIL, HISTORY) and getattr(self, f.name) is not None}
        latency = {} if self.latency is None else {**self.latency.metrics(), LATENCY_DETAIL: self.latency.to_dict()}
        return {**values, m.MACS_RATIO: self.macs_ratio, **latency}

    @classmethod
    def from_record(cls, record: Mapping) -> RunResult:
        """A run read back from its ``metrics.json`` (any release's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names and k != LATENCY_DETAIL}
        latency = record.get(LATENCY_DETAIL)
        return cls(**values, latency=None if latency is None else Latency.from_dict(latency))

    def final_metrics(self) -> dict:
        """The numbers a finished trial reports last: accuracies, costs, latency and how it was timed, training time."""
        latency = self.latency
        timing = {m.LATENCY_BATCH_SIZE: latency.batch_size, m.LATENCY_THREADS: latency.threads,
                  m.LATENCY_IQR_MS: latency.iqr_ms, m.LATENCY_SPREAD: latency.spread,
                  **({m.LATENCY_WIDTH_MULTIPLE: latency.width_multiple} if latency.predicted else {})}
        return {m.VAL_ACC: self.val_acc, m.VAL_ACC_MASKED: self.val_acc_masked, m.TEST_ACC: self.test_acc,
                m.MACS: self.macs, m.DENSE_MACS: self.dense_macs, m.PARAMS: self.params,
                m.DENSE_PARAMS: self.dense_params, m.MACS_RATIO: self.macs_ratio, **latency.metrics(), **timing,
                m.TRAIN_SECONDS: self.train_seconds, m.EPOCHS: self.epochs, m.EPOCH: self.epochs}

    def text_params(self) -> dict:
        """Text settings a finished trial adds to its MLflow params."""
        return {STEM_USED: self.stem, LATENCY_DEVICE: self.latency.device}
