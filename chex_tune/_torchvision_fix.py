"""Let ``import timm`` work where torchvision's compiled ops cannot load.

timm imports torchvision, and torchvision registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` at import time. When its compiled extension does not match the installed torch
(for example a CUDA build of torchvision next to a CPU build of torch), those operators were never
defined and the import fails with ``operator torchvision::nms does not exist``. chex_tune needs none
of torchvision's ops, so in that case (and only then) we define the two schemas ourselves so that
the registration succeeds. Where torchvision's extension loads, this module does nothing.
"""

from __future__ import annotations

import importlib.util
import pathlib

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas


def _has_op(name: str) -> bool:
    return torch._C._dispatch_has_kernel(f"torchvision::{name}") or _schema_exists(name)


def _schema_exists(name: str) -> bool:
    try:
        torch._C._get_schema(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing will register anything
    for location in spec.submodule_search_locations:
        for lib in pathlib.Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_importable() -> None:
    global _library
    if all(_has_op(name) for name in _SCHEMAS) or _extension_loads():
        return
    _library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - a schema-only library
    for name, schema in _SCHEMAS.items():
        if not _schema_exists(name):
            _library.define(schema)


ensure_torchvision_importable()
