"""The ``chex-tune ...`` lines the CLI prints as next steps, written so that they run as printed.

After ``bash scripts/main.sh`` the console script sits in ``.venv/bin`` and that folder is not on PATH unless
the venv is activated: a bare ``chex-tune ui`` would then fail. Where the ``chex-tune`` that PATH finds is not
this installation's, the line names this one's script (relative to the working folder when it is inside it).
"""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import sys
import sysconfig

NAME = "chex-tune"


def command(*args: object) -> str:
    """``chex-tune ARGS`` as a line the user can paste here, each argument quoted for the shell where needed."""
    return " ".join([program(), *(shlex.quote(str(arg)) for arg in args)])


def program() -> str:
    """How to call this installation's ``chex-tune`` from the working folder: the bare name where PATH finds this
    very script, else the script's path (relative when under the working folder), else ``python -m``."""
    script = pathlib.Path(sysconfig.get_path("scripts")) / NAME
    found = shutil.which(NAME)
    if found is not None and (not script.exists() or _same(found, script)):
        return NAME
    if script.exists():
        return shlex.quote(_shown(script))
    return f"{shlex.quote(_shown(pathlib.Path(sys.executable)))} -m chex_tune.cli"


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _shown(path: pathlib.Path) -> str:
    """``path`` relative to the working folder when it lies under it (``.venv/bin/chex-tune``), else absolute."""
    path = pathlib.Path(os.path.abspath(path))  # not resolve(): a venv's python is a link to the base interpreter
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)
