"""Flags derived from the dataclasses that own the settings (``chex_tune._fields.setting``): each field becomes
``--its-name`` with its type, its help and its default shown, and only what the command line gives is passed on,
so the dataclass's own defaults and checks apply. Also the one ``--store``/``--tracking-uri`` block."""

from __future__ import annotations

import argparse
import dataclasses

TYPES = {"int": int, "float": float, "str": str}


def add_fields(parser: argparse.ArgumentParser, cls, *, skip=(), only=None) -> None:
    """A flag for every field of ``cls`` made with ``setting`` (in ``only`` when given, and not in ``skip``)."""
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if "help" not in meta or not meta["flag"] or field.name in skip or only is not None and field.name not in only:
            continue
        name = "--" + field.name.replace("_", "-")
        kind = str(field.type).replace(" ", "").split("|")[0]
        default = "" if field.default is None or field.default is False else f" (default {field.default})"
        if kind == "bool":
            parser.add_argument(name, action="store_true", default=None, help=meta["help"])
        else:
            parser.add_argument(name, type=TYPES[kind], metavar=meta["metavar"], help=meta["help"] + default)


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` the command line gave (the rest keep the dataclass's defaults)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def add_store_flags(parser: argparse.ArgumentParser, holds: str) -> None:
    parser.add_argument("--store", default="mlflow", metavar="DIR",
                        help=f"the local store (default ./mlflow): {holds}")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow server (default: MLFLOW_TRACKING_URI, else the store's database)")
