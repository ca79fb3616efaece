"""The ``chex-tune`` command: a thin argparse front over the package (one module per command).

Errors a user can cause exit 2 with one line on stderr (``chex-tune COMMAND: error: ...``); anything
else is a bug and keeps its traceback. ``CHEX_TUNE_TRACEBACK=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import dis
import errno
import os
import pathlib
import sys

from chex_tune import __version__
from chex_tune.cli import (
    export_cmd,
    family_cmd,
    inspect_cmd,
    latency_cmd,
    pareto_cmd,
    sweep_cmd,
    train_cmd,
    ui_cmd,
)
from chex_tune.core.errors import UserError, disk_error

COMMANDS = {"train": train_cmd, "sweep": sweep_cmd, "family": family_cmd, "ui": ui_cmd, "inspect": inspect_cmd,
            "pareto": pareto_cmd, "export": export_cmd, "latency": latency_cmd}

# OSErrors about a path or the machine that the user can fix (a missing file, a full disk, no permission).
USER_OS_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC,
                  errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}
PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
RAISE = dis.opmap["RAISE_VARARGS"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chex-tune", description="CHEX channel prune-and-regrow for timm CNNs.")
    parser.add_argument("--version", action="version", version=f"chex-tune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        preflight(args)
        return COMMANDS[args.command].run(args) or 0
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get("CHEX_TUNE_TRACEBACK"):
            raise
        print(f"chex-tune {args.command}: error: {message}", file=sys.stderr)
        return 2


def user_error_message(exc: BaseException) -> str | None:
    """The one line to print for an error the user can fix; None for a bug (its traceback is shown)."""
    if isinstance(exc, UserError):
        return str(exc)
    disk = disk_error(exc)
    if disk is not None:  # a full or read-only disk, met mid-run by SQLite, MLflow or Ray
        return (f"{disk}: the disk is full or read-only, so nothing more can be recorded; what was recorded "
                f"before stays (free some space, then run the same command again, with --resume for a sweep)")
    if isinstance(exc, ValueError) and _raised_in_package(exc):
        return str(exc)  # chex_tune raises ValueError for bad settings only (config, spaces, objectives)
    if isinstance(exc, OSError) and exc.errno is None and _raised_in_package(exc):
        return str(exc)  # e.g. FileNotFoundError("search space file 'x.yaml' not found; ...")
    if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
        if exc.filename is None:
            return str(exc)
        return f"{exc.strerror}: {exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return None


def _raised_in_package(exc: BaseException) -> bool:
    """Whether a ``raise`` statement of chex_tune's own code raised ``exc``: not torch's or numpy's code, and
    not an operation that failed in ours (``a, b = [1]``, ``int("x")``: bugs, whose traceback is wanted)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    try:
        pathlib.Path(code.co_filename).resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return False
    return 0 <= tb.tb_lasti < len(code.co_code) and code.co_code[tb.tb_lasti] == RAISE


def preflight(args: argparse.Namespace) -> None:
    """What would fail only after minutes (or never) fails in seconds, before any work: a tracking server or
    Ray cluster that cannot be reached, GPUs asked of a local run on a machine without one."""
    if not hasattr(args, "tracking_uri") and not hasattr(args, "ray_address"):
        return
    local = hasattr(args, "ray_address") and not (args.ray_address or os.environ.get("RAY_ADDRESS"))
    for flag in ("gpus_per_trial", "gpus_per_worker"):
        if local and (getattr(args, flag, 0) or 0) > 0:
            import torch

            if not torch.cuda.is_available():  # Ray would keep the trials pending for good, silently
                option = "--" + flag.replace("_", "-")
                raise UserError(f"{option} {getattr(args, flag):g}: this machine has no CUDA GPU, so no trial could "
                                f"start; use {option} 0, or --ray-address of a cluster with GPUs")
    from chex_tune.tuning.connect import check_ray_address, check_tracking_uri

    if hasattr(args, "tracking_uri"):
        flag = "--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI"
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:  # pareto and export read a store: a missing local database is a mistake, not a new store
            check_tracking_uri(uri, flag=flag, must_exist=args.command in ("pareto", "export"))
    if getattr(args, "ray_address", None) or (hasattr(args, "ray_address") and os.environ.get("RAY_ADDRESS")):
        flag = "--ray-address" if args.ray_address else "RAY_ADDRESS"
        check_ray_address(args.ray_address or os.environ["RAY_ADDRESS"], flag=flag)


if __name__ == "__main__":
    sys.exit(main())
