"""Errors a user can cause and fix (a path, a value, a file, an address), told apart from bugs.

``chex-tune`` prints a ``UserError`` as one line naming the value and what is allowed, and exits 2;
any other exception keeps its traceback. ``UserError`` is a ``ValueError``, so callers that catch bad
values keep working. The readers here turn the ways a file can be wrong into such messages.
"""

from __future__ import annotations

import errno
import os
import pathlib
import pickle
import zipfile

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class UserError(ValueError):
    """Bad input: the message says what was wrong and what is allowed; no traceback is needed."""


def disk_error(exc: BaseException) -> str | None:
    """What a failed write deep inside SQLite, MLflow or Ray means when it is the disk's fault (full or
    read-only), found anywhere in the exception's chain; None otherwise."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            where = f": {exc.filename}" if exc.filename else ""
            return f"{exc.strerror or exc}{where}"
        text = str(exc).lower()
        if type(exc).__name__ == "OperationalError" and ("disk is full" in text or "readonly database" in text):
            return "the database's disk is full" if "disk is full" in text else "the database is read-only"
        exc = exc.__cause__ or exc.__context__
    return None


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a file the user named; a missing, unreadable or binary file is a ``UserError``."""
    path = pathlib.Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {str(path)!r} not found") from None
    except IsADirectoryError:
        raise UserError(f"{what} {str(path)!r} is a directory; give a file") from None
    except NotADirectoryError:
        raise UserError(f"{what} {str(path)!r}: a folder on the path is a file") from None
    except PermissionError:
        raise UserError(f"{what} {str(path)!r} cannot be read: permission denied") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {str(path)!r} is not a text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise UserError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def load_yaml(path: str | os.PathLike, what: str):
    """``yaml.safe_load`` of a file; a syntax error names the file, line and column, on one line."""
    import yaml

    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(yaml_error_message(path, exc)) from None


def yaml_error_message(path, exc) -> str:
    """``space.yaml, line 4, column 34: expected ',' or ']', but got '}' (while parsing ... at line 4)``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    message = f"{where}: not valid YAML: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        line = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        message += f" ({context}{line})"
    return message


def torch_load(path: str | os.PathLike, what: str, *, map_location="cpu", hint: str = ""):
    """``torch.load(weights_only=True)`` of a file the user named, with torch's failures told plainly.

    A missing file stays a ``FileNotFoundError`` (the CLI prints it on one line); a truncated, garbage or
    pickled-object file is a ``UserError`` that says the file is damaged or of another kind.
    """
    import torch

    path = pathlib.Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        with path.open("rb") as file:
            head = file.read(4)
        if head == b"PK\x03\x04":  # a zip archive that lost its end: an interrupted copy or write
            raise UserError(f"{path} is damaged (a truncated zip archive: {path.stat().st_size} bytes); it is not a "
                            f"readable {what}{hint}")
        size = path.stat().st_size
        raise UserError(f"{path} is damaged or not a {what} ({'empty' if size == 0 else f'{size} bytes'}, not a "
                        f"torch.save zip archive){hint}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # missing or unreadable: the path's own error
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise UserError(f"{path} is damaged (its pickled index cannot be read); it is not a readable "
                            f"{what}{hint}") from None
        raise UserError(f"{path} is not a {what}: it holds pickled Python objects (e.g. a whole module saved with "
                        f"torch.save(model)), which chex-tune never loads{hint}") from None
    except Exception as exc:  # torch's readers fail in many ways on a corrupted archive
        raise UserError(f"{path} is damaged (corrupted: {type(exc).__name__} while reading it); it is not a readable "
                        f"{what}{hint}") from None
