"""INT8 ONNX export: the FP32 graph quantized by ONNX Runtime's static quantization, and its proof against FP32.

How it is quantized (``onnxruntime.quantization``): ``quant_pre_process`` first (shape inference and graph
optimisation; ONNX Runtime recommends quantizing an optimised graph with shape information), then
``quantize_static`` in the QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op; the format its
CPU kernels are optimised for since 1.11), weights QInt8 per output channel, activations QUInt8, ``reduce_range``
on. ONNX Runtime's own guidance for x86 CPUs is uint8 activations with int8 weights; on an x86 CPU without VNNI (the
AVX2 machines this project runs on, and many a deployment box) its u8 x s8 kernels add pairs of products in 16 bits
and can saturate, and ``reduce_range`` (7-bit weights) is what it advises there. A file is written once and run
anywhere, so it is written the way that is safe on every x86 CPU; per-channel scales keep the lost bit cheap.

Calibration: MinMax ranges over N images of the run's own training split, drawn as the run's loop draws a batch
(``Data.train_batches``: the same normalisation, fixed seed), so the ranges are those of the images the model was
trained on. With the normalisation folded into the graph they are fed as pixels in [0, 1], as the file takes them.

The proof (``Int8Check``): top-1 agreement of the INT8 file with the FP32 file over the validation split, both
files' validation accuracies, and both files' ONNX Runtime latency at batch 1 on the same threads. INT8 logits are
far from FP32's in absolute terms (a quantization step is ~1% of an activation's range), so the pass rule is
agreement: at least ``AGREEMENT`` of the validation images get the FP32 file's class.
"""

from __future__ import annotations

import logging
import pathlib
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import torch

from chex_tune.train.onnx import set_metadata

log = logging.getLogger(__name__)

QUANTIZE = ("int8",)  # --quantize choices
FALLBACKS = ("fp32",)  # --int8-fallback choices
DEFAULT_CALIBRATION = 256  # images; a modest default (not measured against accuracy): --calibration changes it
AGREEMENT = 0.97  # least top-1 agreement with the FP32 file on the validation split that passes
CALIBRATION_SEED = 0  # the training batch drawn for calibration: the same images every export
CALIBRATION_BATCH = 32  # images per calibration inference
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # where INT8's speed is: these must not stay float
METRIC_PREFIX = "export.onnx_int8"
QUANTIZATION = ("int8, ONNX Runtime static QDQ: per-channel int8 weights (reduce_range, 7 bits), uint8 activations, "
                "MinMax ranges from {n} training images")  # the INT8 file's metadata_props["quantization"]


class NotQuantizable(ValueError):
    """ONNX Runtime left ops of the graph in float, or could not quantize it at all."""


def check_int8_arguments(fmt_name: str, quantize: str | None, calibration: int | None, fallback: str | None) -> int:
    """The number of calibration images, after checking what can be checked before any work."""
    if quantize is None:
        for flag, value in (("--calibration", calibration), ("--int8-fallback", fallback)):
            if value is not None:
                raise ValueError(f"{flag} {value} is for an INT8 export: add --quantize int8 (and --format onnx)")
        return 0
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize {quantize!r}: choose one of: {', '.join(QUANTIZE)}")
    if fmt_name != "onnx":
        raise ValueError(f"--quantize {quantize} writes a quantized ONNX file (ONNX Runtime's static quantization); "
                         f"format {fmt_name!r} cannot hold it: use --format onnx")
    if fallback is not None and fallback not in FALLBACKS:
        raise ValueError(f"--int8-fallback {fallback!r}: choose one of: {', '.join(FALLBACKS)}")
    n = DEFAULT_CALIBRATION if calibration is None else calibration
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--calibration {n!r}: give a positive number of training images (default "
                         f"{DEFAULT_CALIBRATION})")
    return n


def calibration_images(data, n: int, *, raw: bool = False, mean=None, std=None) -> torch.Tensor:
    """``n`` images of ``data``'s training split, as the run's loop feeds them (normalised); ``raw``: as pixels in
    [0, 1] (for a file with the normalisation in its graph)."""
    if n > data.train_size:
        raise ValueError(f"--calibration {n}: the run's training split ({data.name}) has {data.train_size} images; "
                         f"give at most {data.train_size}")
    images, _ = next(data.train_batches(n, epoch=0, seed=CALIBRATION_SEED))
    if raw:
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return images.float().cpu()


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: ``get_next()`` returns a feed dict, then None."""

    def __init__(self, input_name: str, images: torch.Tensor):
        self.batches = iter([{input_name: chunk.numpy()} for chunk in images.split(CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.batches, None)


def quantize(fp32: pathlib.Path, out: pathlib.Path, images: torch.Tensor, *, nodes_to_exclude=()) -> None:
    """``fp32`` (an ONNX file) quantized to ``out``, calibrated on ``images``; raises ``NotQuantizable`` naming the
    ops left in float (``nodes_to_exclude``: node names kept float on purpose, for tests)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("CalibrationReader", (_Reader, CalibrationDataReader), {})
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # CNNs: ONNX shape inference suffices
        name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        try:
            quantize_static(str(prepared), str(out), reader(name, images), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(nodes_to_exclude) or None)
        except Exception as exc:  # noqa: BLE001 - the quantizer's reasons vary; the user needs one line
            raise NotQuantizable(f"ONNX Runtime could not quantize the graph: {type(exc).__name__}: {exc}") from exc
    left = float_ops(onnx.load(str(out)))
    if left:
        shown = ", ".join(f"{node} ({op})" for node, op in left[:5]) + (f" and {len(left) - 5} more"
                                                                        if len(left) > 5 else "")
        raise NotQuantizable(f"ONNX Runtime left {len(left)} weighted op(s) in float: {shown}")
    set_metadata(out, {"quantization": QUANTIZATION.format(n=len(images))})  # beside the FP32 file's input metadata


def float_ops(model) -> list[tuple[str, str]]:
    """(name, op type) of the Conv/Gemm/MatMul nodes of a quantized ONNX model whose weight is not fed by a
    DequantizeLinear: the ones that would run in float."""
    produced_by = {output: node.op_type for node in model.graph.node for output in node.output}
    return [(node.name or node.output[0], node.op_type) for node in model.graph.node
            if node.op_type in WEIGHTED_OPS and len(node.input) > 1
            and produced_by.get(node.input[1]) != "DequantizeLinear"]


@dataclass(frozen=True)
class Int8Check:
    top1_agreement: float  # share of validation images the INT8 file gives the FP32 file's class
    val_acc: float  # the INT8 file's validation accuracy
    fp32_val_acc: float  # the FP32 file's, the same images
    latency_ms: float  # the INT8 file in ONNX Runtime, batch 1
    latency_spread: float  # its IQR / median
    fp32_latency_ms: float  # the FP32 file, the same runtime and threads
    images: int  # validation images compared
    calibration: int  # training images calibrated on
    threads: int

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= AGREEMENT

    def metrics(self) -> dict[str, float]:
        """What is logged on the trial's run: ``export.onnx_int8.top1_agreement``, ``...val_acc``, ..."""
        return {f"{METRIC_PREFIX}.{name}": float(value) for name, value in asdict(self).items() if name != "threads"}

    def describe(self) -> list[str]:
        verdict = "passed" if self.passed else f"FAILED: below {AGREEMENT:g}"
        ratio = self.fp32_latency_ms / self.latency_ms if self.latency_ms > 0 else float("nan")
        return [f"INT8 against FP32 (calibrated on {self.calibration} training images): top-1 agreement "
                f"{self.top1_agreement:.4f} over {self.images} validation images ({verdict}); validation accuracy "
                f"INT8 {self.val_acc:.4f}, FP32 {self.fp32_val_acc:.4f}",
                f"latency, batch 1, {self.threads} thread(s), ONNX Runtime (CPU): INT8 {self.latency_ms:.3g} ms "
                f"(IQR {100 * self.latency_spread:.1f}% of it), FP32 {self.fp32_latency_ms:.3g} ms "
                f"({ratio:.2f}x)"]


def check_int8(int8: pathlib.Path, fp32: pathlib.Path, data, calibration: int, *, raw: bool = False, mean=None,
               std=None) -> Int8Check:
    """The INT8 file against the FP32 file on ``data``'s validation split (``raw``: both take pixels in [0, 1])."""
    from chex_tune.train.latency.runtimes import MODEL_RUN_S, onnx_session, time_onnx

    threads = torch.get_num_threads()
    sessions = [onnx_session(path.read_bytes(), threads) for path in (int8, fp32)]
    name = sessions[0].get_inputs()[0].name
    agree = correct8 = correct32 = total = 0
    for images, labels in data.eval_batches("val"):
        if raw:
            images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        feed = {name: images.float().cpu().numpy()}
        top8, top32 = (np.asarray(s.run(None, feed)[0]).argmax(1) for s in sessions)
        labels = labels.cpu().numpy()
        agree += int((top8 == top32).sum())
        correct8 += int((top8 == labels).sum())
        correct32 += int((top32 == labels).sum())
        total += len(labels)
    one = next(data.eval_batches("val", batch_size=1))[0].float().cpu().numpy()
    (ms8, spread), (ms32, _) = (time_onnx(path.read_bytes(), one, threads, MODEL_RUN_S) for path in (int8, fp32))
    return Int8Check(top1_agreement=agree / total, val_acc=correct8 / total, fp32_val_acc=correct32 / total,
                     latency_ms=ms8, latency_spread=spread, fp32_latency_ms=ms32, images=total,
                     calibration=calibration, threads=threads)


def fp32_twin(out: pathlib.Path) -> pathlib.Path:
    """Where the FP32 file an INT8 export was quantized from is kept: beside it, ``NAME.fp32.onnx``."""
    return out.with_name(f"{out.stem}.fp32{out.suffix or '.onnx'}")
