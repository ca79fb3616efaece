"""Export that proves itself: the written file's outputs against the compact model's in PyTorch, and its latency in
the runtime it was written for beside PyTorch eager's, both measured on this machine.

A wrong graph (an op the exporter translated differently, a shape baked in at trace time) shows as logits that
differ; an exporter's reordering of float32 sums moves them by about 1e-5. Both latencies are taken with the
PyTorch-eager timer of a run's latency (``train/latency/runtimes``: adaptive repeats, the spread recorded) on one
image, the way a trial's ``latency_ms`` is taken, so the two runtimes are compared under the same conditions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from chex_tune.core.latency import in_eval_mode
from chex_tune.train.latency.runtimes import RUNTIMES
from chex_tune.train.latency.target import LatencyTarget

CHECK_BATCH = 8  # random images compared; a batch other than the export's example batch (2) tests the dynamic one
TOLERANCE = 1e-3  # largest absolute difference of logits that passes


@dataclass(frozen=True)
class ExportCheck:
    runtime: str  # what ran the written file
    max_abs_diff: float  # over CHECK_BATCH random inputs of the model's input shape
    latency_ms: float  # the written file in its runtime, batch 1
    latency_spread: float  # its IQR / median
    pytorch_latency_ms: float  # the compact model in PyTorch eager, batch 1, the same threads
    threads: int

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= TOLERANCE

    def metrics(self, fmt: str) -> dict[str, float]:
        """What is logged on the trial's run, named by format (``export.onnx.max_abs_diff``, ...)."""
        values = {k: v for k, v in asdict(self).items() if isinstance(v, float)}
        return {f"export.{fmt}.{name}": value for name, value in values.items()}

    def describe(self) -> list[str]:
        verdict = "passed" if self.passed else f"FAILED: above the tolerance {TOLERANCE:g}"
        return [f"outputs against PyTorch: largest absolute difference {self.max_abs_diff:.2g} over {CHECK_BATCH} "
                f"random inputs ({verdict})",
                f"latency, batch 1, {self.threads} thread(s): {self.runtime} {self.latency_ms:.3g} ms "
                f"(IQR {100 * self.latency_spread:.1f}% of it), PyTorch eager {self.pytorch_latency_ms:.3g} ms"]


def check_export(reference: torch.nn.Module, exported: torch.nn.Module, input_shape, runtime: str, *,
                 seed: int = 0) -> ExportCheck:
    """``exported`` (the written file as loaded back) against ``reference`` (the model it was written from) on
    random inputs of ``input_shape`` (the recipe's, batch first), and both one's latencies."""
    sample = list(input_shape)[1:]
    images = torch.randn([CHECK_BATCH, *sample], generator=torch.Generator().manual_seed(seed))
    reference = in_eval_mode(reference)
    with torch.inference_mode():
        diff = (exported(images).float() - reference(images).float()).abs().max().item()
    target = LatencyTarget(runtime="torch", input_shape=tuple(sample), threads=torch.get_num_threads())
    (theirs, spread), (ours, _) = (RUNTIMES["torch"].model_ms(model, target) for model in (exported, reference))
    return ExportCheck(runtime=runtime, max_abs_diff=float(diff), latency_ms=theirs, latency_spread=spread,
                       pytorch_latency_ms=ours, threads=target.threads)
