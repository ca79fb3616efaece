"""The directory a sweep writes (``--store``): checked before any work, its databases created once.

A sweep writes its MLflow and Optuna databases, Ray's experiment state and every trial's files there.
A store that cannot be written, or a file system without room, would otherwise fail minutes later
inside SQLite or Ray with a traceback that never names ``--store``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from chex_tune.errors import UserError

MIN_FREE_BYTES = 50 * 2**20  # databases, Ray's state and the compact models of a small sweep, with room to spare


def prepare_store(directory: str | os.PathLike, tracking_uri: str | None = None, *,
                  min_free: int = MIN_FREE_BYTES) -> tuple[pathlib.Path, str]:
    """The store's absolute path and the tracking URI the sweep writes to (``tracking_uri``, else
    MLFLOW_TRACKING_URI, else the store's SQLite database), after checking the store is writable with
    ``min_free`` bytes free, and creating its databases."""
    from chex_tune.tuning.runs import default_tracking_uri

    store = pathlib.Path(directory).expanduser().resolve()
    check_writable(store, min_free=min_free)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store)
    create_databases(store, uri)
    return store, uri


def check_writable(store: pathlib.Path, *, min_free: int = MIN_FREE_BYTES) -> None:
    """Raise ``UserError`` naming ``--store`` when it cannot be created or written, or has too little room."""
    try:
        store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=store) as probe:  # one of its own per process: sweeps may start at once
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise UserError(f"--store {store}: cannot write there ({exc.strerror or exc}); choose a writable "
                        f"directory") from None
    free = shutil.disk_usage(store).free
    if free < min_free:
        raise UserError(f"--store {store}: only {free / 2**20:.1f} MB free on its file system; a sweep needs at "
                        f"least {min_free / 2**20:.0f} MB (databases, Ray's state, each trial's model); free some "
                        f"space or choose another directory")


def create_databases(store: pathlib.Path, tracking_uri: str) -> None:
    """Create the store's SQLite databases (MLflow's, Optuna's) one process at a time.

    Two sweeps started at once on a new store would both create MLflow's tables, and the second fails
    ("table experiments already exists"); a file lock makes the first create them and the second find them.
    """
    import fcntl

    import optuna

    from chex_tune.tuning.tracking import client_for

    with (store / ".create.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if tracking_uri.startswith("sqlite:"):
                client_for(tracking_uri).search_experiments(max_results=1)
            optuna.storages.RDBStorage(f"sqlite:///{store / 'optuna.db'}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
