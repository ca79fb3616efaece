"""Trials bigger than one device: a Tune trial that trains on N data-parallel workers.

A multi-worker trial is an ordinary Tune trial (one MLflow run, one Optuna trial) whose function
starts Ray Train's ``TorchTrainer``: N workers in one torch.distributed process group (gloo on CPU,
NCCL on GPU), each running the trial's training on its slice of the global batch. What reaches the
sweep is what a one-worker trial reports:

- every epoch, rank 0's metrics (``EpochsToTune``: Ray Train's report forwarded to Tune);
- at the end, rank 0's final report (``chex_final``) with its files, ended here as the trial's
  (``finish.finish_trial``), so MLflow, Pareto-ASHA, ``--resume`` and export read it as usual.

Rank 0 also reports a resume state every epoch as Ray Train's checkpoint (kept under the sweep's store,
which a cluster shares): with ``restarts``, a worker group that lost a worker starts again from it, and
a trial that ``--resume`` restarts continues from it (Ray Train resumes a run of the same name).
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import tempfile
from collections.abc import Callable

from chex_tune.tuning.finish import TrialEnd, finish_trial, replay_finished
from chex_tune.tuning.options import Workers
from chex_tune.tuning.protocol import FINAL_KEY
from chex_tune.tuning.session import world_rank


def _epochs_to_tune():
    """A Ray Train callback forwarding rank 0's per-epoch reports to the Tune trial; the final one is reported by
    ``run_on_workers`` itself (with the files as a Tune checkpoint)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochsToTune(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and not metrics[0].get(FINAL_KEY):
                super().after_report(run_context, metrics, None)  # the resume state stays Ray Train's

    return EpochsToTune()


def run_on_workers(worker_fn: Callable[[dict], None], config: dict, workers: Workers,
                   artifacts: pathlib.Path) -> dict:
    """In a Tune trial: train ``worker_fn(config)`` on ``workers``; returns rank 0's final report, with its files
    copied to ``artifacts``. A worker group that fails past its restarts fails the trial with Ray Train's error."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer

    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        worker_fn, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers.count, use_gpu=workers.gpus > 0,
                                               resources_per_worker={"CPU": workers.cpus, "GPU": workers.gpus}),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=workers.storage or str(pathlib.Path(tune.get_context().get_trial_dir())),
            failure_config=ray.train.FailureConfig(max_failures=workers.restarts),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[_epochs_to_tune()]))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    final = dict(result.metrics or {})
    if not final.get(FINAL_KEY) or result.checkpoint is None:
        raise RuntimeError(f"the workers of trial {trial_id} ended without a final report with files (last report: "
                           f"{sorted(final)}); the training function must end with the reporter's finish()")
    with result.checkpoint.as_directory() as files:
        shutil.copytree(files, artifacts, dirs_exist_ok=True)
    return final


def on_workers(trainable: Callable[[dict], None]) -> Callable[[dict], None]:
    """A user's function trainable as a multi-worker trial: it runs on every worker (its ``ChexReporter`` reports
    through Ray Train there), and rank 0's final report and files become the trial's."""
    if not callable(trainable) or isinstance(trainable, type):
        raise ValueError(f"several workers per trial need a function trainable (it runs on every worker), got "
                         f"{trainable!r}")

    def multi_worker_trial(config: dict) -> None:
        from ray import tune

        files = pathlib.Path(tune.get_context().get_trial_dir()) / "chex"
        if replay_finished(tune.get_checkpoint(), files):  # it had finished before --resume restarted it
            return
        finish_trial(TrialEnd.of_report(run_on_workers(trainable, config, Workers.of_trial(config), files), files))

    return multi_worker_trial


@contextlib.contextmanager
def rank_directory(prefix: str):
    """A scratch directory for this rank's files, removed afterwards (what rank 0 reports is persisted by Ray)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=f"{prefix}-rank{world_rank()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
