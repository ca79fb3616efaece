"""``chex-tune ui``: the MLflow UI on the local store, bound to 127.0.0.1."""

from __future__ import annotations

import argparse
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


def run(args: argparse.Namespace) -> int:
    command = ui_command(args)
    print(f"MLflow UI: http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    # MLflow's server is a family of processes (uvicorn, job runners): give it its own process group
    # and stop the whole group, or a stopped UI leaves a server behind on the port.
    server = subprocess.Popen(command, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: stop(server))
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
