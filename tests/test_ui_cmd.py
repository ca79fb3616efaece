"""``chex-tune ui`` stops promptly on SIGTERM, and takes the MLflow server's whole process group with it."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def children(pid: int) -> list[int]:
    path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a killed one not yet reaped, a zombie, does not count)."""
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except OSError:  # it exited while being read
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def group_ends(pgid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within  # SIGKILL is delivered asynchronously: allow a moment
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").exists(), reason="reads the server's process from /proc")
def test_sigterm_stops_the_ui_and_its_server_within_five_seconds(tmp_path):
    (tmp_path / "mlflow.db").touch()  # an empty SQLite file: MLflow creates its tables there
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    ui = subprocess.Popen([sys.executable, "-m", "chex_tune.cli", "ui", "--port", str(port), "--store", str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    server_group = None
    try:
        deadline = time.monotonic() + 120  # the server's start on a busy 2-core box: ~15 s measured
        while not listening(port):
            assert ui.poll() is None, f"chex-tune ui exited with {ui.returncode}: {ui.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, "the MLflow UI did not listen on 127.0.0.1 within 120 s"
            time.sleep(0.5)
        (server,) = children(ui.pid)  # `mlflow ui`, the leader of its own process group
        server_group = os.getpgid(server)
        assert server_group == server != os.getpgid(ui.pid)
        sent = time.monotonic()
        ui.send_signal(signal.SIGTERM)
        code = ui.wait(timeout=30)
        took = time.monotonic() - sent
        assert took < 5, f"chex-tune ui took {took:.1f} s to stop after SIGTERM"
        assert code == 0
        assert group_ends(server_group), "the MLflow server's processes outlived chex-tune ui"
        assert not listening(port)
    finally:  # a failed test leaves no server behind: end the processes this test started, by their ids
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        if server_group is not None and group_alive(server_group):
            os.killpg(server_group, signal.SIGKILL)
        ui.stdout.close()
