"""The eager timer trials used before the runtimes' one timer (``torch.utils.benchmark``'s adaptive repeats, or N
single calls), kept for the benchmarks that study the measurement itself (bench_core.py, bench_latency.py); the
package times models with ``chex_tune.train.latency.runtimes``."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.benchmark.utils.common import set_torch_threads

from chex_tune.core.latency import in_eval_mode

SPREAD_TARGET = 0.05  # stop once IQR / median is below this ...
MIN_RUN_S, MAX_RUN_S = 0.2, 2.0  # ... after at least MIN_RUN_S of timed calls and at most MAX_RUN_S


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape, *, batch_size: int = 1, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, repeats: int | None = None, warmup: int = 5,
                    channels_last: bool = False, threads: int | None = None, spread_target: float = SPREAD_TARGET,
                    min_run_s: float = MIN_RUN_S, max_run_s: float = MAX_RUN_S) -> dict:
    """Median milliseconds per forward pass of ``model`` on a random batch of ``input_shape``, and its spread.

    ``input_shape`` is one sample's shape (C, H, W) or a full shape whose first entry is replaced by
    ``batch_size``. The model is put in eval mode; ``warmup`` untimed passes run first. By default the
    number of timed calls adapts (``Timer.adaptive_autorange``: blocks of calls until IQR / median <
    ``spread_target``, within ``min_run_s``..``max_run_s`` seconds); ``repeats=N`` times exactly N single
    calls instead (for callers that interleave models themselves). ``threads``: intra-op threads during
    timing (default: ``torch.get_num_threads()``), stated in the result.

    Returns ``latency_ms`` (median per call), ``iqr_ms`` and ``spread`` (IQR / median) of the per-call
    times, ``samples`` (timed blocks) x ``calls_per_sample``, and the conditions: device, batch_size,
    dtype, threads, warmup, repeats (timed calls in all), method.
    """
    if (repeats is not None and repeats < 1) or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    shape = tuple(input_shape)[-3:] if len(input_shape) == 4 else tuple(input_shape)
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    model = in_eval_mode(model).to(device=device, dtype=dtype)
    inputs = torch.randn((batch_size, *shape), device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        model(inputs)
    # Timer synchronises CUDA around each block and sets the thread count for the timing only.
    timer = benchmark.Timer(stmt="model(inputs)", globals={"model": model, "inputs": inputs}, num_threads=threads)
    if repeats is None:
        measurement = timer.adaptive_autorange(threshold=spread_target, min_run_time=min_run_s,
                                               max_run_time=max_run_s)
        times, per_sample = list(measurement.times), measurement.number_per_run
        method = "torch.utils.benchmark.Timer.adaptive_autorange"
    else:  # exactly `repeats` single calls (Timer.timeit would add two untimed calls to each)
        times = _single_calls(model, inputs, repeats, threads, device)
        per_sample, method = 1, f"{repeats} single calls"
    seconds = np.asarray(times)
    median = float(np.median(seconds)) * 1e3
    q1, q3 = (float(v) * 1e3 for v in np.percentile(seconds, [25, 75]))
    result = {"latency_ms": median, "iqr_ms": q3 - q1, "spread": (q3 - q1) / median if median > 0 else 0.0,
              "samples": len(times), "calls_per_sample": per_sample, "repeats": len(times) * per_sample,
              "device": str(device), "batch_size": batch_size, "dtype": str(dtype).removeprefix("torch."),
              "threads": threads, "warmup": warmup, "method": method}
    return result


def _single_calls(model, inputs, repeats: int, threads: int, device: torch.device) -> list[float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with set_torch_threads(threads):
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            model(inputs)
            sync()
            times.append(time.perf_counter() - start)
    return times
