"""chex_tune: CHEX channel prune-and-regrow for timm CNNs, and its multi-objective tuning.

    from chex_tune import ChannelExplorer, save_compact, load_compact

Names load on first use (PEP 562), so ``import chex_tune`` and ``chex_tune.__version__`` (the CLI's
``--version``) import neither torch nor timm. Two things the package needs from the start are kept
without importing them here:

* ``chex_tune._torchvision_fix`` must run before torchvision is imported (timm, torch-pruning and
  Lightning import it). A finder on ``sys.meta_path`` runs it at the first ``import torchvision`` in the
  process, then removes itself; so ``import chex_tune`` before ``import timm`` keeps working as before.
* compact models of the small-input stem and of users' own modules are rebuilt by builders that
  ``chex_tune.core.compact.BUILDER_REFERENCES`` finds by reference: ``load_compact`` needs no import first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["ChannelExplorer", "ChexConfig", "__version__", "load_compact", "save_compact"]

_EXPORTS = {"ChannelExplorer": "chex_tune.core.explorer", "ChexConfig": "chex_tune.core.config",
            "save_compact": "chex_tune.core.compact", "load_compact": "chex_tune.core.compact"}
_SUBMODULES = ("cli", "config", "core", "train", "tuning", "units")  # chex_tune.core... without an import

if TYPE_CHECKING:
    from chex_tune.core.compact import load_compact, save_compact
    from chex_tune.core.config import ChexConfig
    from chex_tune.core.explorer import ChannelExplorer


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"chex_tune.{name}")
    else:
        raise AttributeError(f"module 'chex_tune' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _TorchvisionFixFinder(importlib.abc.MetaPathFinder):
    """Runs the torchvision import fix just before torchvision's first import; finds nothing itself."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            _remove_finder()  # first: the fix looks torchvision up itself
            importlib.import_module("chex_tune._torchvision_fix")
        return None  # the usual finders import torchvision


def _remove_finder() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _TorchvisionFixFinder)]


if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionFixFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionFixFinder())
