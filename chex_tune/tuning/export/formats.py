"""Export formats, a registry of plain functions: how a compact model is written, and how the written file is loaded
back the way its users load it (to score it).

``state`` is the run's ``compact.pt`` as it is (recipe + weights, loaded with ``chex_tune.load_compact``, no
pickle); ``torchscript`` is a ``torch.jit.trace`` of the compact model in eval mode; ``onnx`` comes from torch's
``torch.export``-based exporter (``train/onnx.py``), with a dynamic batch dimension named ``batch``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from chex_tune.core.compact import load_compact
from chex_tune.train.onnx import quiet_export, require, set_metadata, write_onnx
from chex_tune.tuning.export.preprocessing import Normalized, Preprocessing
from chex_tune.tuning.export.registry import MODEL_ARTIFACT


@dataclass(frozen=True)
class Format:
    write: Callable[[torch.nn.Module, list, pathlib.Path], None]  # (compact model in eval mode, input shape, path)
    load: Callable[[pathlib.Path], torch.nn.Module]  # the written file, as its users load it
    runtime: str = "PyTorch eager"  # what runs the written file (named in the export's check)
    annotate: Callable[[pathlib.Path, dict[str, str]], None] | None = None  # writes text metadata into the file
    folds: bool = False  # can hold the input normalisation in its graph (--with-normalization)


def _write_torchscript(model: torch.nn.Module, input_shape, out: pathlib.Path) -> None:
    with quiet_export():
        torch.jit.save(torch.jit.trace(model, _example(input_shape)), str(out))


def _write_onnx(model: torch.nn.Module, input_shape, out: pathlib.Path) -> None:
    write_onnx(model, _example(input_shape), out)


def _load_torchscript(path: pathlib.Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*deprecated.*")
        return torch.jit.load(str(path), map_location="cpu").eval()


FORMATS: dict[str, Format] = {
    "state": Format(write=lambda model, shape, out: None, load=load_compact),  # written by copying the file
    "torchscript": Format(write=_write_torchscript, load=_load_torchscript, runtime="TorchScript"),
    "onnx": Format(write=_write_onnx, load=lambda path: OnnxModel(path), runtime="ONNX Runtime (CPU)",
                   annotate=set_metadata, folds=True),
}


def _format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def _example(input_shape) -> torch.Tensor:
    # Batch 2, not 1: a trace or export at batch 1 may bake the batch size into reshapes.
    return torch.zeros([2, *list(input_shape)[1:]])


def check_folds(fmt_name: str) -> None:
    if not _format(fmt_name).folds:
        raise ValueError(f"--with-normalization puts the normalisation into the graph of an ONNX file; format "
                         f"{fmt_name!r} cannot hold it: use --format onnx, or export without it")


def input_shape_of(compact_path: pathlib.Path) -> list:
    """The input shape a compact model's recipe records (batch first), without building the model."""
    return torch.load(compact_path, map_location="cpu", weights_only=True)["input_shape"]


def _write(model: torch.nn.Module, input_shape, fmt_name: str, out: pathlib.Path,
           preprocessing: Preprocessing | None) -> torch.nn.Module:
    """``model`` written as ``fmt_name``; with a folded normalisation the model wrapped in it, which is returned:
    what the written file computes, for the export's check."""
    fmt = _format(fmt_name)
    if preprocessing is not None and preprocessing.folded:
        check_folds(fmt_name)
        model = Normalized(model, preprocessing.mean, preprocessing.std).eval()
    fmt.write(model, input_shape, out)
    if fmt.annotate is not None and preprocessing is not None:
        fmt.annotate(out, preprocessing.metadata())
    return model


def write_export(compact_path: pathlib.Path, fmt_name: str, out: pathlib.Path, *,
                 preprocessing: Preprocessing | None = None) -> tuple[torch.nn.Module, list] | None:
    """``compact_path`` (a chex_tune compact model) written to ``out`` in ``fmt_name``, with ``preprocessing`` in its
    metadata (and graph, when folded); the model the file computes and its input shape (None for ``state``: the
    file is copied as it is)."""
    _format(fmt_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt_name == "state":
        shutil.copyfile(compact_path, out)
        return None
    model = load_compact(compact_path).eval()
    shape = model.chex_recipe["input_shape"]
    return _write(model, shape, fmt_name, out, preprocessing), shape


def write_from_mlflow_model(tracking_uri: str, run_id: str, compact_path: pathlib.Path, fmt_name: str,
                            out: pathlib.Path, *, preprocessing: Preprocessing | None = None
                            ) -> tuple[torch.nn.Module, list]:
    """The run's ``mlflow.pytorch`` copy (pt2: a graph, no class needed) written to ``out`` in ``fmt_name``; that model
    and its input shape."""
    import mlflow.pytorch

    from chex_tune.tuning.track.store import using_tracking_uri

    _format(fmt_name)
    input_shape = input_shape_of(compact_path)
    with using_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return _write(model, input_shape, fmt_name, out, preprocessing), input_shape


def load_exported(path: str | os.PathLike, fmt_name: str) -> torch.nn.Module:
    """The written file loaded back as its users would: load_compact, torch.jit.load or onnxruntime."""
    return _format(fmt_name).load(pathlib.Path(path))


def runtime_of(fmt_name: str) -> str:
    return _format(fmt_name).runtime


class OnnxModel(torch.nn.Module):
    """An ONNX file run by onnxruntime, shaped as a module so the training loop's ``evaluate`` can score it."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        require("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share torch was given
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: images.detach().cpu().float().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])
