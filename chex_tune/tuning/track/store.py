"""Where a sweep is recorded: the store directory (``--store``) and the MLflow tracking URI, decided and checked once.

A sweep writes its MLflow and Optuna databases, Ray's experiment state and every trial's files under its store.
A store that cannot be written, or a file system without room, would otherwise fail minutes later inside SQLite
or Ray with a traceback that never names ``--store``. Readers (``pareto``, ``export``) open an existing store
and refuse a missing one, since opening it would create an empty store and hide the mistake.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile

from chex_tune.core.errors import UserError

MIN_FREE_BYTES = 50 * 2**20  # databases, Ray's state and the compact models of a small sweep, with room to spare
DATABASE = "mlflow.db"
OPTUNA_DATABASE = "optuna.db"


def default_tracking_uri(store: str | os.PathLike) -> str:
    """The SQLite database a sweep writes under its local store."""
    return f"sqlite:///{pathlib.Path(store).expanduser().resolve() / DATABASE}"


def tracking_uri_for(store: str | os.PathLike, tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else MLFLOW_TRACKING_URI, else the store's own database: the one rule every caller uses."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store)


def optuna_storage_url(store: pathlib.Path) -> str:
    return f"sqlite:///{pathlib.Path(store) / OPTUNA_DATABASE}"


def artifact_location_for(tracking_uri: str) -> str | None:
    """Artifacts beside a local SQLite database (``DIR/mlflow.db`` -> ``DIR/artifacts``); servers choose their own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = pathlib.Path(tracking_uri[len("sqlite:///"):])
    return (database.parent / "artifacts").resolve().as_uri()


def client_for(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def open_store(store: str | os.PathLike = "mlflow", tracking_uri: str | None = None):
    """An MlflowClient on an existing store (``tracking_uri``, else MLFLOW_TRACKING_URI, else ``store``'s database),
    and the URI. A missing local database is an error naming the remedies."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        database = pathlib.Path(store).expanduser().resolve() / DATABASE
        if not database.exists():
            raise ValueError(f"no MLflow store at {database}; run a sweep first (chex-tune sweep SPACE.yaml) "
                             "or pass --store DIR or --tracking-uri URI")
        uri = default_tracking_uri(store)
    return client_for(uri), uri


def prepare_store(directory: str | os.PathLike, tracking_uri: str | None = None, *,
                  min_free: int = MIN_FREE_BYTES) -> tuple[pathlib.Path, str]:
    """The store's absolute path and the tracking URI a sweep writes to, after checking the store is writable with
    ``min_free`` bytes free, and creating its databases."""
    store = pathlib.Path(directory).expanduser().resolve()
    check_writable(store, min_free=min_free)
    uri = tracking_uri_for(store, tracking_uri)
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

    with (store / ".create.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if tracking_uri.startswith("sqlite:"):
                client_for(tracking_uri).search_experiments(max_results=1)
            optuna.storages.RDBStorage(optuna_storage_url(store))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API on ``uri`` for a moment; the process's own tracking URI (and its MLFLOW_TRACKING_URI)
    are exactly as they were afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, previous_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # also exports MLFLOW_TRACKING_URI
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def default_store_uri(tracking_uri: str | None = None) -> str:
    """For a user's own Tuner or study: ``tracking_uri``, else MLFLOW_TRACKING_URI, else ``./mlflow/mlflow.db``
    (created: where ``chex-tune pareto`` looks by default)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        pathlib.Path("mlflow").mkdir(exist_ok=True)
        uri = default_tracking_uri("mlflow")
    return uri
