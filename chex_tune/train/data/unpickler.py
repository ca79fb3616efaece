"""Reading pickled numpy arrays (CIFAR-10's Python batches) without running whatever else a pickle names."""

from __future__ import annotations

import codecs
import importlib
import pickle

import numpy as np


def _numpy_core(module: str, name: str):
    # numpy 2 moved numpy.core to numpy._core (the old name still loads, with a warning): try the new one first
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {module}.{name}")


# what pickled numpy arrays refer to, whatever the numpy and protocol that wrote them; nothing else
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_core("numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_core("numeric", "_frombuffer"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,  # how Python 3 writes bytes in protocol 2
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses every other global.

    A pickle can name any importable callable and have it called while loading (``os.system`` and
    friends), so ``pickle.load`` on a file is running that file as code: this project never does.
    """

    def find_class(self, module: str, name: str):
        resolve = _ARRAY_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}: only numpy arrays and plain "
                                         f"containers are allowed in a CIFAR-10 batch file")
        return resolve()
