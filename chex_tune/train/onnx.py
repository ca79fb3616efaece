"""Writing a model as ONNX, one way for every caller (export, latency tables).

torch's ``torch.export``-based exporter (``dynamo=True``; the older TorchScript-based exporter is deprecated), with
the input named ``images``, the output ``logits`` and, unless asked otherwise, a dynamic batch dimension ``batch``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings

import torch


def require(*modules: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"ONNX needs {', '.join(missing)}: pip install onnx onnxscript onnxruntime")


@contextlib.contextmanager
def quiet_export():
    """torch 2.13 deprecates TorchScript, and its exporter warns about its own internals: nothing to act on."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r".*(deprecated|LeafSpec).*")
        warnings.filterwarnings("ignore", message=r".*in training mode.*")  # a pt2 graph is fixed in eval form
        yield


def write_onnx(model: torch.nn.Module, example: torch.Tensor, out: str | os.PathLike, *,
               dynamic_batch: bool = True) -> None:
    """``model`` (in eval mode) exported at ``example`` to ``out``. With a dynamic batch, export at a batch other
    than 1: an export at batch 1 may bake the batch size into reshapes."""
    require("onnxscript", "onnx")
    with quiet_export():
        torch.onnx.export(model, (example,), str(out), dynamo=True, verbose=False, external_data=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None)


def set_metadata(path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the ONNX file's ``metadata_props`` (what onnxruntime's ``get_modelmeta()``
    ``custom_metadata_map`` and Netron show), replacing entries of the same keys."""
    require("onnx")
    import onnx

    model = onnx.load(str(path))
    kept = {prop.key: prop.value for prop in model.metadata_props if prop.key not in metadata}
    onnx.helper.set_model_props(model, {**kept, **{str(k): str(v) for k, v in metadata.items()}})
    onnx.save(model, str(path))
