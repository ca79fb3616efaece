"""The family is a sweep on Ray Tune: its members are the runs they were in one process, a member may train on
two workers, and a family whose driver is killed continues with --resume after its last finished member."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from test_sweep import kill_driver_when

from chex_tune import load_compact
from chex_tune.config import RunConfig
from chex_tune.train.loop import train
from chex_tune.tuning.family import run_family

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "batch_size": 32, "train_subset": 128,
        "val_size": 64, "device": "cpu", "epochs": 1}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    train(RunConfig.from_dict({**TINY, "epochs": 2, "sparsity": 0.0}), out)
    return out / "compact.pt"


@pytest.fixture(scope="module")
def one_worker(dense, tmp_path_factory):
    return run_family(dict(TINY), levels=(0.5,), init=str(dense), store=str(tmp_path_factory.mktemp("one")),
                      log=lambda _m: None)


def widths(path) -> list[int]:
    return [module.out_channels for module in load_compact(path).modules() if hasattr(module, "out_channels")]


def test_a_member_on_ray_is_the_run_it_is_in_this_process(dense, one_worker, tmp_path):
    """Same settings, same start: the trial gives the numbers a plain train() gives, to the last digit (CPU)."""
    member = one_worker.members[0]
    here = train(RunConfig.from_dict({**TINY, "init": str(dense), "macs_target": 0.5}, preset="finetune"), tmp_path)
    assert (member["val_acc"], member["test_acc"], member["params"]) == (here.val_acc, here.test_acc, here.params)
    assert widths(member["path"]) == widths(tmp_path / "compact.pt")


def test_a_two_worker_member_keeps_the_widths_of_a_one_worker_member(dense, one_worker, tmp_path):
    two = run_family({**TINY, "sync_bn": True}, levels=(0.5,), init=str(dense), store=str(tmp_path),
                     workers_per_trial=2, log=lambda _m: None)
    member = two.members[0]
    from mlflow import MlflowClient

    assert MlflowClient(two.tracking_uri).get_run(member["run_id"]).data.params["workers_per_trial"] == "2"
    assert widths(member["path"]) == widths(one_worker.members[0]["path"])
    assert member["macs"] == one_worker.members[0]["macs"]


def test_a_killed_family_resumes_after_its_last_finished_member(dense, tmp_path):
    from mlflow import MlflowClient

    from chex_tune.tuning.track.store import default_tracking_uri

    store = tmp_path / "store"
    command = [sys.executable, "-m", "chex_tune.cli", "family", "--init", str(dense), "--model", "test_resnet",
               "--dataset", "synthetic", "--stem", "timm", "--batch-size", "32", "--train-subset", "128",
               "--val-size", "64", "--device", "cpu", "--epochs", "1", "--levels", "0.5", "0.25", "0.12",
               "--store", str(store), "--experiment", "killed"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    returncode, output = kill_driver_when(command, env, "member 0.5: ")
    assert returncode == -signal.SIGKILL, output
    client = MlflowClient(default_tracking_uri(store))
    experiment = client.get_experiment_by_name("killed").experiment_id

    def members() -> dict:
        return {r.data.tags["chex.member"]: r for r in client.search_runs([experiment], "tags.`chex.member` LIKE '%'")}

    said = float(re.search(r"member 0\.5: val_acc ([0-9.]+)", output).group(1))
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = members()
    assert sorted(runs) == ["0.12", "0.25", "0.5"] and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert len(client.search_runs([experiment], "tags.`chex.member` = '0.5'")) == 1  # one run per member
    assert round(runs["0.5"].data.metrics["val_acc"], 4) == said  # the finished member kept, not trained anew
    assert runs["0.25"].data.tags["chex.parent_run"] == runs["0.5"].info.run_id  # the chain goes on from it
    assert runs["0.12"].data.tags["chex.parent_run"] == runs["0.25"].info.run_id
    parent = client.search_runs([experiment], "tags.`chex.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert json.loads(parent[0].data.params["levels"].replace("'", '"')) == [0.5, 0.25, 0.12]
