"""Where a latency is measured: a runtime on a device, at a batch size, input shape, dtype and thread count.

A latency table holds for one target and one network; its key says both, plus what can change the numbers without
changing the settings (the runtime's version, the processor), so a table is never read for another runtime, batch,
input shape or machine kind. The network enters by its layers' shapes (``layers.LayerSpec``), not its name: two
recipes that build the same layers share a table.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass

from chex_tune.config import LATENCY_RUNTIMES as RUNTIME_NAMES


@dataclass(frozen=True)
class LatencyTarget:
    runtime: str = "onnxruntime"  # ONNX Runtime's CPU provider, or PyTorch eager
    input_shape: tuple[int, ...] = (3, 224, 224)  # one sample's (C, H, W)
    batch_size: int = 1
    threads: int = 1
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_NAMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; choose one of: {', '.join(RUNTIME_NAMES)}")
        shape = tuple(self.input_shape)
        if len(shape) != 3 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"input_shape must be one sample's (C, H, W), positive integers, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        for name in ("batch_size", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.device != "cpu":
            raise ValueError(f"device {self.device!r} has no latency tables yet; only cpu is measured")
        if self.dtype != "float32":
            raise ValueError(f"dtype {self.dtype!r} has no latency tables yet; only float32 is measured")

    @classmethod
    def parse_input(cls, text: str, **settings) -> LatencyTarget:
        """From ``BxCxHxW`` (``1x3x224x224``): the batch and one sample's shape."""
        try:
            numbers = [int(part) for part in text.lower().split("x")]
        except ValueError:
            numbers = []
        if len(numbers) != 4 or min(numbers) < 1:
            raise ValueError(f"--input must be BxCxHxW with positive integers (e.g. 1x3x224x224), got {text!r}")
        return cls(batch_size=numbers[0], input_shape=tuple(numbers[1:]), **settings)

    @property
    def input_text(self) -> str:
        return "x".join(str(n) for n in (self.batch_size, *self.input_shape))

    def describe(self) -> str:
        return f"{self.runtime} on {self.device} ({processor()}), input {self.input_text}, {self.dtype}, " \
               f"{self.threads} thread(s)"

    def key(self, layers: list, schema: int) -> str:
        """The table's key: this target, the runtime's version, the processor, the network's layers (by name) and the
        table's schema (a file of an earlier form is never read for a new one)."""
        identity = {"schema": schema, "target": asdict(self), "runtime_version": runtime_version(self.runtime),
                    "processor": processor(), "layers": [[name, spec.as_dict()] for name, spec in layers]}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import torch

    return f"torch {torch.__version__}"


def processor() -> str:
    """The CPU's model name (what decides a kernel's speed); the architecture where the system does not say."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def default_threads() -> int:
    """The cores this process may use, the way a trial's share is counted."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
