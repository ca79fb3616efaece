"""A setting of an options dataclass with its help text, so a command line is derived from the dataclass (name,
type, default and help) instead of restating it."""

from __future__ import annotations

import dataclasses

MISSING = dataclasses.MISSING


def setting(default=MISSING, help: str = "", *, flag: bool = True, metavar: str | None = None):  # noqa: A002
    """A dataclass field whose ``help`` the CLI shows; ``flag=False`` keeps it off the command line."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar})
