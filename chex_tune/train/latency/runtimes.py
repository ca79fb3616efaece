"""Timing in a target's runtime: one layer at given widths (what a table is made of) and a whole network (what it
is calibrated and checked against). A registry of plain functions, one pair per runtime.

Both time with ``torch.utils.benchmark``'s adaptive loop (blocks of calls until the interquartile range is under 5%
of the median, within a time budget) and return the median milliseconds per call with the spread (IQR / median):
the package's one timer (a run without a latency table times its finished model with the ``torch`` runtime).
ONNX Runtime runs with the target's intra-op threads and one inter-op thread, all graph optimisations on (the
deployment default: norms fold into convs, activations fuse)."""

from __future__ import annotations

import pathlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils import benchmark

from chex_tune.core.latency import in_eval_mode
from chex_tune.train.latency.layers import LayerSpec
from chex_tune.train.latency.target import LatencyTarget

# How long a timing runs, in seconds: untimed calls first for at least ``warmup`` (a network's first calls after other
# work, an export or another session, ran 1.7x slower for longer than three calls: benchmarks/latency_model.md), then
# timed blocks for at least ``low`` and at most ``high``
LAYER_RUN_S = (0.02, 0.05, 0.5)  # a layer's
MODEL_RUN_S = (0.3, 0.5, 3.0)  # a network's


def time_calls(call: Callable[[], object], threads: int, run_s: tuple[float, float, float]) -> tuple[float, float]:
    """Median milliseconds per ``call()`` and its spread (IQR / median), after untimed calls (``run_s``: warm-up,
    least and most timed seconds)."""
    warmup_s, low_s, high_s = run_s
    warm_until = time.perf_counter() + warmup_s
    calls = 0
    while calls < 3 or time.perf_counter() < warm_until:
        call()
        calls += 1
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    measurement = timer.adaptive_autorange(threshold=0.05, min_run_time=low_s, max_run_time=high_s)
    times = np.asarray(measurement.times) * 1e3
    median = float(np.median(times))
    q1, q3 = np.percentile(times, [25, 75])
    return median, float((q3 - q1) / median) if median > 0 else 0.0


# ------------------------------------------------------------------------------------------ one layer
def layer_channels(spec: LayerSpec, in_width: int, out_width: int) -> tuple[int, int, int]:
    """(input channels, output channels, groups) of the layer at these widths; a depthwise conv's follow its
    output width."""
    if spec.depthwise:
        return out_width, out_width, out_width
    return in_width * spec.groups, out_width, spec.groups


def _layer_module(spec: LayerSpec, in_width: int, out_width: int) -> nn.Module:
    cin, cout, groups = layer_channels(spec, in_width, out_width)
    if spec.kind == "linear":
        return nn.Linear(cin, cout)
    conv = nn.Conv2d(cin, cout, spec.kernel, spec.stride, spec.padding, spec.dilation, groups)
    return nn.Sequential(conv, nn.ReLU())


def _layer_input(spec: LayerSpec, in_width: int, out_width: int, batch: int) -> torch.Tensor:
    cin = layer_channels(spec, in_width, out_width)[0]
    return torch.randn(batch, cin) if spec.kind == "linear" else torch.randn(batch, cin, *spec.input_size)


def _onnx_layer(spec: LayerSpec, in_width: int, out_width: int, batch: int) -> bytes:
    """The layer as a one-node ONNX graph (Conv + Relu, or Gemm), random weights, built directly: exporting each
    grid point through torch's exporter would take seconds apiece."""
    from onnx import TensorProto, helper, numpy_helper

    cin, cout, groups = layer_channels(spec, in_width, out_width)
    rng = np.random.default_rng(0)
    if spec.kind == "linear":
        shape = [batch, cin]
        weight = rng.standard_normal((cout, cin)).astype(np.float32)
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    else:
        shape = [batch, cin, *spec.input_size]
        weight = rng.standard_normal((cout, cin // groups, *spec.kernel)).astype(np.float32)
        pads = [*spec.padding, *spec.padding]
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(spec.kernel),
                                  strides=list(spec.stride), pads=pads, dilations=list(spec.dilation), group=groups),
                 helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w"),
                               numpy_helper.from_array(np.zeros(cout, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    return model.SerializeToString()


def onnx_session(model: bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def time_onnx(model: bytes, inputs: np.ndarray, threads: int, run_s) -> tuple[float, float]:
    """A fresh session's median milliseconds per run on ``inputs``, and the spread."""
    session = onnx_session(model, threads)
    feed = {session.get_inputs()[0].name: inputs}
    return time_calls(lambda: session.run(None, feed), threads, run_s)


def _onnx_layer_ms(spec: LayerSpec, in_width: int, out_width: int, target: LatencyTarget) -> tuple[float, float]:
    inputs = _layer_input(spec, in_width, out_width, target.batch_size).numpy()
    return time_onnx(_onnx_layer(spec, in_width, out_width, target.batch_size), inputs, target.threads, LAYER_RUN_S)


@torch.inference_mode()
def _torch_layer_ms(spec: LayerSpec, in_width: int, out_width: int, target: LatencyTarget) -> tuple[float, float]:
    module = _layer_module(spec, in_width, out_width).eval()
    inputs = _layer_input(spec, in_width, out_width, target.batch_size)
    return time_calls(lambda: module(inputs), target.threads, LAYER_RUN_S)


# ------------------------------------------------------------------------------------------ a whole network
def onnx_graph(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = False) -> bytes:
    """``model`` exported at ``example`` (the package's one ONNX writer), as bytes."""
    from chex_tune.train.onnx import write_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.onnx"
        write_onnx(model.eval(), example, path, dynamic_batch=dynamic_batch)
        return path.read_bytes()


def _onnx_model_ms(model: nn.Module, target: LatencyTarget) -> tuple[float, float]:
    """The network as ``chex-tune export --format onnx`` writes it (a dynamic batch), timed at the target's batch: a
    graph exported at a fixed batch ran at another speed (mobilenetv2 at 224 px: 3.6 against 6.4 ms, 2 threads)."""
    graph = onnx_graph(model, torch.zeros(max(2, target.batch_size), *target.input_shape), dynamic_batch=True)
    return time_onnx(graph, torch.randn(target.batch_size, *target.input_shape).numpy(), target.threads, MODEL_RUN_S)


@torch.inference_mode()
def _torch_model_ms(model: nn.Module, target: LatencyTarget) -> tuple[float, float]:
    model = in_eval_mode(model)
    example = torch.randn(target.batch_size, *target.input_shape)
    return time_calls(lambda: model(example), target.threads, MODEL_RUN_S)


@dataclass(frozen=True)
class Runtime:
    layer_ms: Callable[[LayerSpec, int, int, LatencyTarget], tuple[float, float]]
    model_ms: Callable[[nn.Module, LatencyTarget], tuple[float, float]]
    needs: tuple[str, ...] = ()  # modules it imports


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime(_onnx_layer_ms, _onnx_model_ms, needs=("onnx", "onnxscript", "onnxruntime")),
    "torch": Runtime(_torch_layer_ms, _torch_model_ms),
}
