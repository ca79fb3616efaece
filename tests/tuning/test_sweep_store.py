"""A store that cannot be written, or a disk that fills up, is one clear error and loses nothing recorded.

The read-only and full file systems are real: small tmpfs mounts (this needs root and mount rights, as on
our CI machines; elsewhere those tests say why they are skipped). The other checks need neither.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess
import time

import pytest
from test_sweep import child_runs, client_of, study_trials, sweep_process

from chex_tune.core.errors import UserError, disk_error
from chex_tune.tuning.track.store import check_writable, prepare_store

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@contextlib.contextmanager
def tmpfs(path, *options: str):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}): needs root and mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_store_under_a_file_is_a_user_error_naming_the_flag(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--store .*file/store: cannot write there \(Not a directory\)"):
        prepare_store(tmp_path / "file" / "store")


def test_a_file_system_with_too_little_room_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"MB free on its file system; a sweep needs at least \d+ MB"):
        check_writable(tmp_path / "store", min_free=2**62)
    store, uri = prepare_store(tmp_path / "store")  # the default minimum is met here
    assert uri == f"sqlite:///{store / 'mlflow.db'}" and (store / "optuna.db").exists()


def test_disk_errors_are_found_anywhere_in_an_exception_chain():
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("MLflow could not log") from inner
    except RuntimeError as outer:
        assert disk_error(outer) == "the database's disk is full"
    assert disk_error(OSError(errno.ENOSPC, "No space left on device", "/x")) == "No space left on device: /x"
    assert disk_error(OSError(errno.EROFS, "Read-only file system")) == "Read-only file system"
    assert disk_error(ValueError("bad value")) is None
    assert disk_error(OSError(errno.ENOENT, "No such file or directory")) is None


def test_a_read_only_or_full_store_exits_2_with_one_line(tmp_path):
    store, command, env = sweep_process(tmp_path, "ro", epochs=1)
    with tmpfs(tmp_path / "ro", "ro"):
        run = subprocess.run([*command, "--store", str(tmp_path / "ro" / "store")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert "cannot write there (Read-only file system)" in run.stderr
    with tmpfs(tmp_path / "small", "size=1m") as small:
        (small / "store").mkdir()
        subprocess.run(["dd", "if=/dev/zero", f"of={small / 'fill'}", "bs=64k"], capture_output=True)
        run = subprocess.run([*command, "--store", str(small / "store")], env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert "cannot write there (No space left on device)" in run.stderr


def test_a_disk_that_fills_mid_sweep_stops_it_with_one_line_and_resume_completes_it_after(tmp_path):
    _, command, env = sweep_process(tmp_path, "full", epochs=3)
    with tmpfs(tmp_path / "disk", "size=80m") as disk:
        store = disk / "store"
        command = [*command, "--store", str(store)]
        driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if " done: " in line and not (disk / "fill").exists():  # the disk fills once a trial is recorded
                deadline = time.monotonic() + 60
                while not any(r.info.status == "FINISHED" for r in child_runs(client_of(store), "full")):
                    assert time.monotonic() < deadline, "the first trial's run was never finished"
                    time.sleep(0.2)
                subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'fill'}", "bs=1M"], capture_output=True)
        driver.wait(timeout=120)
        output = "".join(lines)
        assert driver.returncode == 2 and "Traceback" not in output, output
        assert output.rstrip().splitlines()[-1].startswith("chex-tune sweep: error: ") and "disk is full" in output
        finished = {r.info.run_id for r in child_runs(client_of(store), "full") if r.info.status == "FINISHED"}
        assert 1 <= len(finished) < 4, output  # what was recorded before the disk filled stays

        (disk / "fill").unlink()
        resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        runs = child_runs(client_of(store), "full")
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, resumed.stderr
        assert len({r.data.tags["chex.trial_id"] for r in runs}) == 4  # no trial twice
        # a trial finished after Ray last saved its state is run again on resume (its first run is replaced)
        states = [t.state.name for t in study_trials(store, runs[0].data.tags["chex.sweep"])]
        assert states.count("COMPLETE") == 4 and "RUNNING" not in states, states


def test_sweeps_checking_one_new_store_at_once_do_not_trip_over_each_other(tmp_path):
    """Two sweeps started together check the same new store at the same moment (each with its own probe)."""
    from concurrent.futures import ThreadPoolExecutor

    store = tmp_path / "store"
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: check_writable(store), range(64))) == [None] * 64
    assert list(store.iterdir()) == []  # no probe left behind
