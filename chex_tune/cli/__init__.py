"""The ``chex-tune`` command: a thin argparse front over the package (one module per command)."""

from __future__ import annotations

import argparse
import sys

from chex_tune import __version__
from chex_tune.cli import export_cmd, inspect_cmd, pareto_cmd, sweep_cmd, train_cmd, ui_cmd

COMMANDS = {"train": train_cmd, "sweep": sweep_cmd, "ui": ui_cmd, "inspect": inspect_cmd, "pareto": pareto_cmd,
            "export": export_cmd}


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
        return COMMANDS[args.command].run(args) or 0
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # bad input (settings, or a path the user gave): one clear line, no traceback
        print(f"chex-tune {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
