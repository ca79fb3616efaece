"""``chex-tune ui``: the MLflow UI on the local store, bound to 127.0.0.1."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import subprocess
import sys

from chex_tune.cli._commands import command

HELP = "open the MLflow UI on the local store (127.0.0.1 only unless --host says otherwise)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--store", default="mlflow", help="the local store a sweep wrote (default ./mlflow)")


def ui_command(args: argparse.Namespace) -> list[str]:
    database = pathlib.Path(args.store).expanduser().resolve() / "mlflow.db"
    if not database.exists():
        raise ValueError(f"no MLflow store at {database}; run a sweep first ({command('sweep', 'SPACE.yaml')}) "
                         "or pass --store DIR")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{database}",
            "--host", args.host, "--port", str(args.port)]


GRACE_S = 3.0  # how long the server's processes get to exit on SIGTERM before they are killed


class _Stopped(Exception):
    """SIGTERM reached ``chex-tune ui``: stop the server as Ctrl-C does."""


def _stopped(*_) -> None:
    raise _Stopped


def run(args: argparse.Namespace) -> int:
    argv = ui_command(args)
    print(f"MLflow UI: http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    # MLflow's server is a family of processes (uvicorn, job runners): give it its own process group
    # and stop the whole group, or a stopped UI leaves a server behind on the port.
    previous = signal.signal(signal.SIGTERM, _stopped)
    server = None
    try:
        server = subprocess.Popen(argv, start_new_session=True)
        return server.wait()
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
        try:
            if server is not None:
                stop(server)
        finally:
            signal.signal(signal.SIGTERM, previous)


def stop(server: subprocess.Popen, grace: float = GRACE_S) -> None:
    """SIGTERM to the server's process group, ``grace`` seconds to exit, then SIGKILL to whatever is left of it.

    MLflow's UI processes (uvicorn and its workers, the job runner) were measured still running 30 s after a
    SIGTERM, so they are not waited for longer than ``grace``. The group is killed even when its leader left in
    time: its workers may still hold the port.
    """
    if server.poll() is None:
        _signal_group(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=grace)
    _signal_group(server.pid, signal.SIGKILL)
    server.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(pgid, signum)
