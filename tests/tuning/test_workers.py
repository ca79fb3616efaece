"""Multi-worker trials: real sweeps whose trials each train on two gloo workers (Ray Train inside the Tune trial).

Marker ``ray`` (part of the CI run): each sweep starts a local Ray instance and trains timm's tiny test_resnet on
synthetic data; a trial's two workers share this machine's cores.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from test_sweep import child_runs, client_of, kill_driver_when, study_trials, trial_workers

from chex_tune import load_compact
from chex_tune.core.schedule import ExploreSchedule
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SPACE = {
    "fixed": {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 3, "batch_size": 32,
              "train_subset": 256, "val_size": 64, "lr": 0.05, "sync_bn": True, "workers_per_trial": 2,
              "period": 2, "explore_until": 0.5, "unit": "step"},
    "search": {"sparsity": {"low": 0.3, "high": 0.7}, "regrow_ratio": {"low": 0.0, "high": 0.2}},
    "objectives": ["val_acc:max", "macs:min"],
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    store = tmp_path_factory.mktemp("workers") / "store"
    result = run_sweep(SearchSpace.from_dict(SPACE, source="workers"),
                       SweepOptions(trials=2, concurrent=2, store=str(store), experiment="workers",
                                    optuna_sampler="random"), log=lambda _m: None)
    return store, result


def trial_metrics(client, run, tmp_path) -> dict:
    return json.loads(open(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read())


def test_each_two_worker_trial_is_one_finished_run_with_one_value_per_epoch(sweep):
    store, result = sweep
    client = client_of(store)
    runs = child_runs(client, "workers")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert len(result.rows) == 2 and result.front
    for run in runs:
        assert run.data.params["workers_per_trial"] == "2" and run.data.params["sync_bn"] == "True"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
        assert run.data.metrics["macs"] < run.data.metrics["dense_macs"]
    assert sorted(t.state.name for t in study_trials(store, result.sweep)) == ["COMPLETE", "COMPLETE"]


def test_both_ranks_hold_the_same_masks_after_every_prune_regrow_step(sweep, tmp_path):
    store, _ = sweep
    client = client_of(store)
    for run in child_runs(client, "workers"):
        metrics = trial_metrics(client, run, tmp_path / run.info.run_id)
        ranks = metrics["distributed"]
        assert ranks["world_size"] == 2 and ranks["backend"] == "gloo" and ranks["sync_bn"] is True
        steps = metrics["epochs"] * (metrics["train_size"] // SPACE["fixed"]["batch_size"])
        schedule = ExploreSchedule(period=int(run.data.params["period"]), total=steps,
                                   explore_until=float(run.data.params["explore_until"]))
        explore_steps = sum(schedule.is_explore_step(t) for t in range(1, steps + 1))
        assert explore_steps >= 3
        digests = metrics["mask_digests"]
        assert len(digests) == explore_steps + 1  # the first prune, then every prune-regrow step
        assert all(len(row) == 2 and row[0] == row[1] for row in digests), digests
        assert len({row[0] for row in digests}) > 1  # the masks did change along the way


def test_the_compact_model_is_the_same_on_both_ranks_and_loads(sweep, tmp_path):
    store, _ = sweep
    client = client_of(store)
    run = child_runs(client, "workers")[0]
    assert trial_metrics(client, run, tmp_path)["distributed"]["output_gap"] == 0.0
    model = load_compact(client.download_artifacts(run.info.run_id, "compact.pt", str(tmp_path)))
    assert sum(p.numel() for p in model.parameters()) == run.data.metrics["params"]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def sweep_command(tmp_path, experiment: str, *, trials: int, epochs: int, restarts: int = 0):
    store = tmp_path / "store"
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "fixed": {**SPACE["fixed"], "epochs": epochs}}))
    command = [sys.executable, "-m", "chex_tune.cli", "sweep", str(space_file), "--trials", str(trials),
               "--concurrent", "1", "--store", str(store), "--experiment", experiment, "--optuna-sampler", "random",
               "--worker-restarts", str(restarts)]
    return store, command, {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}


def kill_a_worker(command: list[str], env: dict, when: str) -> tuple[int, str, list[int]]:
    """Run a sweep process and SIGKILL one of its Ray Train ranks as soon as its progress prints ``when``: its exit
    status, everything it printed and the pids killed."""
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, killed = [], []
    for line in driver.stdout:
        lines.append(line)
        if not killed and when in line:
            killed = trial_workers(driver.pid, b"ray::RayTrainWorker")[-1:]
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
    rest, _ = driver.communicate(timeout=400)
    return driver.returncode, "".join(lines) + rest, killed


def test_a_worker_killed_mid_epoch_fails_its_trial_saying_so_and_the_sweep_goes_on(tmp_path):
    store, command, env = sweep_command(tmp_path, "killed_worker", trials=2, epochs=4)
    returncode, output, killed = kill_a_worker(command, env, "trial 1/2 epoch 1/4")  # in its second epoch
    assert len(killed) == 1 and returncode == 0, (killed, output)
    assert "trial 1/2 FAILED" in output, output
    runs = child_runs(client_of(store), "killed_worker")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(runs) == 2 and len(failed) == 1, output
    assert "worker" in failed[0].data.tags["error"].lower(), failed[0].data.tags["error"]
    assert [r.info.status for r in runs if r is not failed[0]] == ["FINISHED"]


def test_a_killed_driver_then_resume_continues_the_two_worker_trial_from_its_last_epoch(tmp_path):
    store, command, env = sweep_command(tmp_path, "resumed", trials=1, epochs=4)
    returncode, output = kill_driver_when(command, env, "trial 1/1 epoch 2/4")
    assert returncode == -signal.SIGKILL, output

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    client = client_of(store)
    runs = child_runs(client, "resumed")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", resumed.stdout
    metrics = trial_metrics(client, runs[0], tmp_path)
    assert metrics["resumed_after_epoch"] >= 2, metrics.get("resumed_after_epoch")
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]


def own_trainable_on_two_workers(name: str, tmp_path, monkeypatch):
    """A one-trial sweep of ``user_models.<name>`` on two workers; the MLflow client, the trial's run and the result."""
    from chex_tune.tuning import ChexSpace

    monkeypatch.setenv("PYTHONPATH", str(pathlib.Path(__file__).parent))  # the Ray this sweep starts passes it on
    import user_models

    result = run_sweep(getattr(user_models, name),
                       SweepOptions(trials=1, concurrent=1, store=str(tmp_path / "store"), experiment=name,
                                    workers_per_trial=2),
                       param_space={"lr": 0.05}, chex_space=ChexSpace(sparsity=(0.3, 0.6), period=(1, 2)),
                       objectives="val_acc:max,macs:min", log=lambda _m: None)
    client = client_of(tmp_path / "store")
    runs = child_runs(client, name)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", runs[0].data.tags.get("error")
    assert len(result.rows) == 1
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_acc")] == [1, 2]
    model = load_compact(client.download_artifacts(runs[0].info.run_id, "compact.pt", str(tmp_path)))
    assert sum(p.numel() for p in model.parameters()) == runs[0].data.metrics["params"]
    return client, runs[0], result


def test_a_users_own_ddp_loop_with_chex_reporter_is_one_trial_on_two_workers(tmp_path, monkeypatch):
    _, run, _ = own_trainable_on_two_workers("ddp_trainable", tmp_path, monkeypatch)
    assert run.data.metrics["rank"] == 0.0  # rank 0's final report is the trial's


def test_with_a_restart_a_worker_killed_mid_epoch_costs_its_trial_only_the_epoch_it_was_in(tmp_path):
    store, command, env = sweep_command(tmp_path, "restarted", trials=1, epochs=4, restarts=1)
    returncode, output, killed = kill_a_worker(command, env, "trial 1/1 epoch 2/4")
    assert len(killed) == 1 and returncode == 0, (killed, output)
    client = client_of(store)
    runs = child_runs(client, "restarted")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", output
    metrics = trial_metrics(client, runs[0], tmp_path)
    assert metrics["resumed_after_epoch"] >= 2 and [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]


def test_a_lightning_fit_under_ray_ddp_with_the_chex_callback_is_one_trial_on_two_workers(tmp_path, monkeypatch):
    own_trainable_on_two_workers("lightning_ddp_trainable", tmp_path, monkeypatch)
