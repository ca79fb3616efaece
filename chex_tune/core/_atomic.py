"""Atomic file writes: a crash or a kill never leaves a half-written model or checkpoint behind."""

from __future__ import annotations

import os
import secrets

import torch


def _create_beside(path: str) -> str:
    """A new, empty temporary file beside ``path`` with the mode ``open()`` gives (0666 less the umask).

    ``tempfile.mkstemp`` creates 0600 files: renamed into place they would leave a model or metrics file
    unreadable to the other users a plain ``open(path, "w")`` lets read it.
    """
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
            return tmp
        except FileExistsError:  # another writer drew the same name: draw again
            continue


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _create_beside(path)
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
