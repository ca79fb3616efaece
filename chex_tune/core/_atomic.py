"""Atomic file writes: a crash or a kill never leaves a half-written model or checkpoint behind."""

from __future__ import annotations

import os
import tempfile

import torch


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic on POSIX within one file system
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(payload, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)
