"""Sweeps end to end on synthetic data: Ray Tune trials, the Optuna study and MLflow runs.

Each test starts a local Ray instance (marker ``ray``; part of the CI run) and trains timm's tiny
test_resnet for two epochs per trial, a few seconds each.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import yaml

from chex_tune import load_compact
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep
from chex_tune.tuning.track.store import default_tracking_uri, using_tracking_uri

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SPACE = {
    "fixed": {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 2, "batch_size": 32,
              "train_subset": 128, "val_size": 64, "lr": 0.05},
    "search": {"sparsity": {"low": 0.3, "high": 0.7}, "regrow_ratio": {"low": 0.0, "high": 0.2},
               "period": {"low": 2, "high": 6, "int": True}},
    "objectives": ["val_acc:max", "macs:min"],
}


def client_of(store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=default_tracking_uri(store))


def child_runs(client, experiment: str):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string="tags.`chex.trial_id` LIKE '%'", max_results=1000)


def study_trials(store, sweep: str):
    import optuna

    study = optuna.load_study(study_name=sweep, storage=f"sqlite:///{store / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def test_four_trials_two_at_a_time_are_four_mlflow_runs_and_four_optuna_trials(tmp_path):
    store = tmp_path / "store"
    space = SearchSpace.from_dict(SPACE, source="synthetic")
    result = run_sweep(space, SweepOptions(trials=4, concurrent=2, store=str(store), experiment="four",
                                           optuna_sampler="random"), log=lambda _m: None)
    client = client_of(store)
    runs = child_runs(client, "four")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {result.parent_run_id}
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        assert params["model"] == "test_resnet" and 0.3 <= float(params["sparsity"]) <= 0.7
        assert params["stem_used"] == "timm" and params["scorer"] == "css"  # defaults are logged too
        assert "time_this_iter_s" not in metrics and "pid" not in metrics  # Ray's bookkeeping is not
        for key in ("val_acc", "test_acc", "macs", "params", "latency_ms", "dense_macs", "train_loss"):
            assert key in metrics
        assert metrics["macs"] < metrics["dense_macs"]
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"compact.pt", "metrics.json", "widths.json", "widths.png", "config.yaml", "chex.yaml"} <= artifacts
    model = load_compact(client.download_artifacts(runs[0].info.run_id, "compact.pt", str(tmp_path)))
    assert sum(p.numel() for p in model.parameters()) == runs[0].data.metrics["params"]
    import mlflow.pytorch  # the same model through MLflow's flavor (torch.export format, no pickle)
    import torch

    with using_tracking_uri(default_tracking_uri(store)):
        served = mlflow.pytorch.load_model(f"runs:/{runs[0].info.run_id}/model")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(served(x), model(x))
    trials = study_trials(store, result.sweep)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" and len(t.values) == 2 for t in trials)
    assert sorted(t.values[1] for t in trials) == sorted(r.data.metrics["macs"] for r in runs)
    assert result.front and all(row.rank == 0 for row in result.front)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nothing leaks into the next sweep


def test_a_failing_trial_is_a_failed_run_and_the_others_finish(tmp_path):
    store = tmp_path / "store"
    fixed = {k: v for k, v in SPACE["fixed"].items() if k != "lr"}
    space = SearchSpace.from_dict({**SPACE, "fixed": fixed, "search": {**SPACE["search"],
                                                                      "lr": {"choices": [0.05, 1.0e12]}}},
                                  source="synthetic")
    result = run_sweep(space, SweepOptions(trials=3, concurrent=2, store=str(store), experiment="fail",
                                           optuna_sampler="random", seed=1), log=lambda _m: None)
    runs = child_runs(client_of(store), "fail")
    diverging = [r for r in runs if float(r.data.params["lr"]) > 1]
    assert diverging, "the seed should sample the diverging learning rate at least once"
    assert all(r.info.status == "FAILED" and "NonFiniteLossError" in r.data.tags["error"] for r in diverging)
    assert {r.info.status for r in runs if r not in diverging} == {"FINISHED"} and len(runs) == 3
    states = sorted(t.state.name for t in study_trials(store, result.sweep))
    assert states == sorted(["FAIL"] * len(diverging) + ["COMPLETE"] * (3 - len(diverging)))
    assert all(row.rank == -1 for row in result.rows if row.status == "FAILED")


def test_the_old_sampler_keyword_warns_and_still_sets_the_optuna_sampler():
    with pytest.warns(DeprecationWarning, match=r"SweepOptions\(sampler=\.\.\.\) is deprecated: it is optuna_sampler"):
        options = SweepOptions(sampler="random")
    assert options.optuna_sampler == "random" and options.sampler is None
    assert SweepOptions(optuna_sampler="nsga2").optuna_sampler == "nsga2"


def sweep_process(tmp_path, experiment: str, *, epochs: int):
    """The store, command line and environment of a 4-trial sweep run one trial at a time in its own process."""
    store = tmp_path / "store"
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "fixed": {**SPACE["fixed"], "epochs": epochs}}))
    command = [sys.executable, "-m", "chex_tune.cli", "sweep", str(space_file), "--trials", "4", "--concurrent",
               "1", "--store", str(store), "--experiment", experiment, "--optuna-sampler", "random"]
    return store, command, {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}


def interrupt_after_first_trial(command: list[str], env: dict) -> tuple[int, str]:
    """Run a sweep process, send Ctrl-C as soon as its progress says the first trial is done; its exit status
    and everything it printed."""
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in driver.stdout:
        lines.append(line)
        if " done: " in line:
            driver.send_signal(signal.SIGINT)
            break
    rest, _ = driver.communicate(timeout=180)
    return driver.returncode, "".join(lines) + rest


def test_an_interrupted_sweep_resumes_and_runs_only_the_remaining_trials(tmp_path):
    store, command, env = sweep_process(tmp_path, "resume", epochs=6)
    returncode, output = interrupt_after_first_trial(command, env)
    assert returncode == 130, output
    before = {r.info.run_id for r in child_runs(client_of(store), "resume") if r.info.status == "FINISHED"}
    assert 1 <= len(before) < 4, output
    interrupted = [r for r in child_runs(client_of(store), "resume") if r.info.status != "FINISHED"]
    assert {r.info.status for r in interrupted} <= {"KILLED"}, output  # Ctrl-C leaves no run RUNNING
    assert not any("chex.stopped_at_epoch" in r.data.tags for r in interrupted)  # interrupted, not stopped

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = child_runs(client_of(store), "resume")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert before <= {r.info.run_id for r in runs}  # finished trials were not re-run
    parent = client_of(store).search_runs([runs[0].info.experiment_id], "tags.`chex.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    trials = study_trials(store, parent[0].data.tags["chex.sweep"])
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 4


def test_a_killed_driver_then_resume_completes_the_sweep_with_every_run_once_and_none_running(tmp_path):
    """kill -9 of the driver right after a trial finished (its MLflow run may not be closed yet), then --resume."""
    store, command, env = sweep_process(tmp_path, "killed", epochs=4)
    returncode, output = kill_driver_when(command, env, " done: ")
    assert returncode == -signal.SIGKILL, output

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = child_runs(client_of(store), "killed")
    assert sorted(r.data.tags["chex.trial_id"] for r in runs) == sorted({r.data.tags["chex.trial_id"] for r in runs})
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, resumed.stdout
    parent = client_of(store).search_runs([runs[0].info.experiment_id], "tags.`chex.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    states = [t.state.name for t in study_trials(store, parent[0].data.tags["chex.sweep"])]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states, states


def kill_driver_when(command: list[str], env: dict, when: str) -> tuple[int, str]:
    """Run a sweep process, kill -9 it as soon as its progress prints ``when``; its exit status and what it printed.
    The Ray processes it started are left behind by the kill: they are ended afterwards, as an operator would."""
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    lines = []
    try:
        for line in driver.stdout:
            lines.append(line)
            if when in line:
                driver.kill()
                break
        driver.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    return driver.returncode, "".join(lines)


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc: parent ids), depth first."""
    children: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def trial_workers(driver_pid: int, title: bytes = b"ray::ImplicitFunc") -> list[int]:
    """The Ray worker processes under the driver whose title starts with ``title``: by default those running a
    trial (``ray::ImplicitFunc...``); Ray Train's ranks are ``ray::RayTrainWorker...``."""
    workers = []
    for pid in descendants(driver_pid):
        with contextlib.suppress(OSError):
            if pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                workers.append(pid)
    return workers


def test_a_trial_worker_killed_mid_epoch_is_a_failed_run_saying_so_and_the_sweep_goes_on(tmp_path):
    store, command, env = sweep_process(tmp_path, "worker", epochs=4)
    command[command.index("--trials") + 1] = "3"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, killed = [], []
    for line in driver.stdout:
        lines.append(line)
        if not killed and "trial 1/3 epoch 1/4" in line:  # the first trial is training its second epoch
            killed = trial_workers(driver.pid)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
    rest, _ = driver.communicate(timeout=300)
    output = "".join(lines) + rest
    assert len(killed) == 1, (killed, output)
    assert driver.returncode == 0, output
    assert "trial 1/3 FAILED" in output, output
    runs = child_runs(client_of(store), "worker")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(runs) == 3 and len(failed) == 1, output
    reason = failed[0].data.tags["error"]
    assert "worker process has died" in reason, reason  # what happened, not a bare exit code
    assert {r.info.status for r in runs if r is not failed[0]} == {"FINISHED"}
    assert [m.step for m in client_of(store).get_metric_history(failed[0].info.run_id, "train_loss")] == [1]
    states = sorted(t.state.name for t in study_trials(store, failed[0].data.tags["chex.sweep"]))
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], states


def test_two_sweeps_started_at_once_on_a_new_store_both_finish_with_all_their_runs(tmp_path):
    store = tmp_path / "store"
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    drivers = {name: subprocess.Popen(
        [sys.executable, "-m", "chex_tune.cli", "sweep", str(space_file), "--trials", "2", "--concurrent", "1",
         "--cpus-per-trial", "1", "--store", str(store), "--experiment", name, "--optuna-sampler", "random"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in ("first", "second")}
    outputs = {name: driver.communicate(timeout=400)[0] for name, driver in drivers.items()}
    for name, driver in drivers.items():
        assert driver.returncode == 0, outputs[name]  # no "table ... already exists", no lock error
        runs = child_runs(client_of(store), name)
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}, outputs[name]
        parent = client_of(store).search_runs([runs[0].info.experiment_id], "tags.`chex.role` = 'sweep'")
        assert [t.state.name for t in study_trials(store, parent[0].data.tags["chex.sweep"])] == ["COMPLETE"] * 2


@pytest.mark.slow
def test_the_mlflow_ui_and_optuna_dashboard_show_the_trials_in_a_real_browser(tmp_path):
    """After a small sweep, scripts/browser_check.py renders the MLflow UI and optuna-dashboard in headless Chromium."""
    store = tmp_path / "store"
    run_sweep(SearchSpace.from_dict(SPACE, source="synthetic"),
              SweepOptions(trials=2, concurrent=2, store=str(store), experiment="ui", optuna_sampler="random"),
              log=lambda _m: None)
    script = pathlib.Path(__file__).parents[2] / "scripts" / "browser_check.py"
    check = subprocess.run([sys.executable, str(script), "--experiment", "ui", "--store", str(store), "--out",
                            str(tmp_path / "shots"), "--port", "5097"], capture_output=True, text=True, timeout=400)
    assert check.returncode == 0, check.stdout + check.stderr
    summary = json.loads(check.stdout)
    assert summary["checks"] and all(summary["checks"].values())
    for name in ("pareto_front.png", "mlflow_run_page.png", "optuna_dashboard.png"):
        assert (tmp_path / "shots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
