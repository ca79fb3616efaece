"""Inference latency: median wall time of repeated forward passes, with the conditions recorded."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape, *, batch_size: int = 1, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, repeats: int = 20, warmup: int = 5,
                    channels_last: bool = False) -> dict:
    """Median milliseconds per forward pass of ``model`` on a random batch of ``input_shape``.

    ``input_shape`` is one sample's shape (C, H, W) or a full shape whose first entry is replaced by
    ``batch_size``. The model is put in eval mode; warm-up passes run first and are not timed.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    shape = tuple(input_shape)[-3:] if len(input_shape) == 4 else tuple(input_shape)
    device = torch.device(device)
    model = model.eval().to(device=device, dtype=dtype)
    inputs = torch.randn((batch_size, *shape), device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(inputs)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(inputs)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"latency_ms": statistics.median(times), "device": str(device), "batch_size": batch_size,
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "repeats": repeats, "warmup": warmup}
