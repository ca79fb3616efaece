"""Every example in examples/ runs as a user runs it (a fresh process, tiny settings, 2 CPU cores).

Each writes MLflow to the MLFLOW_TRACKING_URI it is given and nothing into its working directory; its
store then holds the expected finished trial runs with the user's metric, ``macs``, and a compact model
that loads (``compact.pt`` through its importable builder in a fresh process, and MLflow's own
``mlflow.pytorch`` copy, which needs no class at all).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"

pytestmark = pytest.mark.timeout(900)


def run_example(tmp_path: pathlib.Path, script: str, *args: str) -> tuple[str, str]:
    workdir, store = tmp_path / "cwd", tmp_path / "store"
    workdir.mkdir()
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert sorted(p.name for p in workdir.iterdir()) == [], "the example wrote into its working directory"
    return uri, done.stdout


def finished_trials(uri: str, experiment: str, count: int, metric: str = "val_acc"):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], "tags.`chex.trial_id` LIKE '%'")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * count
    for run in runs:
        assert 0 <= run.data.metrics[metric] <= 1 and 0 < run.data.metrics["macs"] < run.data.metrics["dense_macs"]
        assert run.data.tags.get("pareto") in ("true", "false")
        assert "chex.warning" not in run.data.tags
    parents = client.search_runs([found.experiment_id], "tags.`chex.role` = 'sweep'")
    assert [p.info.status for p in parents] == ["FINISHED"]
    return client, runs


def served_output(uri: str, run_id: str) -> torch.Tensor:
    """The run's mlflow.pytorch model (pt2: no pickle, no class) on a fixed digits-shaped batch."""
    import mlflow.pytorch

    from chex_tune.tuning.track.store import using_tracking_uri

    with using_tracking_uri(uri):
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    with torch.no_grad():
        return model(torch.linspace(0, 1, 2 * 64).reshape(2, 1, 8, 8))


def compact_output_in_a_fresh_process(client, run_id: str, tmp_path: pathlib.Path) -> torch.Tensor:
    path = client.download_artifacts(run_id, "compact.pt", str(tmp_path))
    script = f"""
import torch
from chex_tune.tuning import load_compact
model = load_compact({path!r})
with torch.no_grad():
    torch.save(model(torch.linspace(0, 1, 2 * 64).reshape(2, 1, 8, 8)), {str(tmp_path / 'out.pt')!r})
"""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


@pytest.mark.ray
def test_custom_model_sweep(tmp_path, capsys):
    uri, out = run_example(tmp_path, "custom_model_sweep.py", "--trials", "2", "--epochs", "1")
    client, runs = finished_trials(uri, "custom_model_sweep", 2)
    assert "Pareto front of 'custom_model_sweep'" in out and all(r.info.run_id in out for r in runs
                                                                   if r.data.tags["pareto"] == "true")
    run = runs[0]
    assert run.data.params["builder"] == "digits:build_model" and "lr" in run.data.tags["chex.searched"]
    torch.testing.assert_close(compact_output_in_a_fresh_process(client, run.info.run_id, tmp_path),
                               served_output(uri, run.info.run_id), rtol=1e-4, atol=1e-5)
    check_pareto_and_export(uri, runs, tmp_path, capsys)


def check_pareto_and_export(uri, runs, tmp_path, capsys):
    """The CLI on the example's sweep: the sweep's own objectives; ONNX written from the run's MLflow model
    (the example's module is not importable in this process) and a plain note that it was not scored."""
    from chex_tune.cli import main
    from chex_tune.tuning.export import load_exported

    assert main(["pareto", "custom_model_sweep", "--tracking-uri", uri, "--plot", str(tmp_path / "f.png")]) == 0
    text = capsys.readouterr().out
    assert "(val_acc:max, macs:min)" in text
    assert all(r.info.run_id in text for r in runs if r.data.tags["pareto"] == "true")
    run_id = runs[0].info.run_id
    assert main(["export", "custom_model_sweep", "--run", run_id, "--format", "onnx", "-o",
                 str(tmp_path / "m.onnx"), "--tracking-uri", uri]) == 0
    text = capsys.readouterr().out
    assert "note: exported from the run's MLflow model (pt2), since its builder is not importable here " \
           "(cannot import model builder 'digits:build_model'" in text
    assert f"not evaluated: run {run_id} was trained by your own trainable" in text and "--evaluate" in text
    x = torch.linspace(0, 1, 2 * 64).reshape(2, 1, 8, 8)
    torch.testing.assert_close(load_exported(tmp_path / "m.onnx", "onnx")(torch.cat([x, x, x])),
                               torch.cat([served_output(uri, run_id)] * 3), rtol=1e-4, atol=1e-5)


@pytest.mark.ray
def test_own_ray_tuner(tmp_path):
    uri, out = run_example(tmp_path, "own_ray_tuner.py", "--trials", "2", "--epochs", "1")
    _, runs = finished_trials(uri, "own_ray_tuner", 2)
    assert "2 trials (val_acc, MACs, sparsity, lr)" in out
    assert served_output(uri, runs[0].info.run_id).shape == (2, 10)


def test_optuna_only(tmp_path):
    uri, out = run_example(tmp_path, "optuna_only.py", "--trials", "2", "--epochs", "1")
    _, runs = finished_trials(uri, "optuna_only", 2)
    front = [r for r in runs if r.data.tags["pareto"] == "true"]
    assert out.count("trial ") >= len(front) and "study.best_trials" in out
    assert served_output(uri, front[0].info.run_id).shape == (2, 10)


def test_lightning_callback(tmp_path):
    uri, _ = run_example(tmp_path, "lightning_callback.py", "--trials", "1", "--epochs", "1")
    client, runs = finished_trials(uri, "lightning_callback", 1)
    assert "train_loss" in runs[0].data.metrics  # the module's own logged metric, reported by the callback
    assert served_output(uri, runs[0].info.run_id).shape == (2, 10)


@pytest.mark.ray
def test_compress_trained_model(tmp_path):
    """A new user's path: own module and weights file -> a sweep of fine-tunes -> the front -> an ONNX file."""
    uri, out = run_example(tmp_path, "compress_trained_model.py", "--trials", "2", "--epochs", "1")
    client, runs = finished_trials(uri, "compress_trained_model", 2)
    assert all(0.03 <= float(r.data.params["macs_target"]) <= 0.6 for r in runs)
    assert all(r.data.params["builder"] == "digits:build_model" for r in runs)
    chosen = next(line for line in out.splitlines() if line.startswith("chosen: run "))
    assert chosen.split()[2].rstrip(",") in {r.info.run_id for r in runs if r.data.tags["pareto"] == "true"}
    scored = next(line for line in out.splitlines() if line.startswith("ONNX: "))
    accuracy = float(scored.split("validation accuracy of the file ")[1].split()[0])
    assert accuracy > 0.5  # a fine-tuned trained model, not a fresh one (10 classes: 0.1 by chance)


@pytest.mark.ray
def test_own_family(tmp_path):
    uri, out = run_example(tmp_path, "own_family.py", "--levels", "0.5", "0.25", "--trials", "3", "--epochs", "1",
                           "--dense-epochs", "2")
    client, members = finished_trials(uri, "own_family", 2)
    runs = {r.data.tags["chex.member"]: r for r in members}
    assert runs["0.25"].data.tags["chex.parent_run"] == runs["0.5"].info.run_id  # the cascade: from the member before
    assert "chex.parent_run" not in runs["0.5"].data.tags  # the first: from the user's own trained weights
    for level in ("0.5", "0.25"):  # a fraction of the dense model's MACs, the parent's start notwithstanding
        assert runs[level].data.metrics["macs_ratio"] == pytest.approx(float(level), abs=0.03)
    client, trials = finished_trials(uri, "own_inheriting_sweep", 3)
    assert any(r.data.tags.get("chex.parent_run") for r in trials), out  # a later trial started from an earlier one
    small = runs["0.25"]
    assert small.data.params["builder"] == "digits:build_model"
    torch.testing.assert_close(compact_output_in_a_fresh_process(client, small.info.run_id, tmp_path),
                               served_output(uri, small.info.run_id), rtol=1e-4, atol=1e-5)
