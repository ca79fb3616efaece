"""Where trial code runs and where its reports go: a Ray Tune trial, a rank of a multi-worker trial (Ray Train),
or no Ray at all. Ray is only looked at when this process has imported it."""

from __future__ import annotations

import pathlib
import socket
import sys
import warnings
from collections.abc import Mapping


def in_ray_trial() -> bool:
    """True inside a Ray Tune trial."""
    if "ray" not in sys.modules:
        return False
    try:
        from ray import tune
    except ImportError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # outside a trial Ray warns that there is no session
        return tune.get_context().get_trial_id() is not None


def in_train_worker() -> bool:
    """True inside a Ray Train worker (a rank of a multi-worker trial)."""
    if "ray" not in sys.modules:
        return False
    import ray.train

    try:
        ray.train.get_context()
    except (RuntimeError, DeprecationWarning):  # outside any session; in a Tune trial ("use ray.tune there")
        return False
    return True


def world_rank() -> int:
    import ray.train

    return ray.train.get_context().get_world_rank()


def trial_location() -> dict:
    """Where this Ray trial runs, as MLflow params: on a cluster, which node trained it (its latency was timed
    on that node's hardware, so latencies from unlike nodes do not compare)."""
    import ray

    return {"ray_node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def report(metrics: Mapping, checkpoint_dir: str | pathlib.Path | None = None) -> None:
    """Report to the trial: through Ray Train on a worker (every rank calls it; rank 0's metrics and checkpoint are
    the ones kept), else to Tune."""
    if in_train_worker():
        import ray.train

        checkpoint = None if checkpoint_dir is None else ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(dict(metrics), checkpoint=checkpoint)
        return
    from ray import tune

    checkpoint = None if checkpoint_dir is None else tune.Checkpoint.from_directory(str(checkpoint_dir))
    tune.report(dict(metrics), checkpoint=checkpoint)
