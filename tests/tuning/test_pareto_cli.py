"""``chex-tune pareto`` and the errors of ``chex-tune export``, on an MLflow store written by hand.

The store imitates what a sweep leaves (tuning/track/recorder.py): parent runs tagged ``chex.role=sweep``,
trial runs nested under them with their settings as params and final metrics; no Ray, no training.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chex_tune.cli import main
from chex_tune.tuning.plots import is_dense_baseline
from chex_tune.tuning.track.runs import read_trials, tag_front
from chex_tune.tuning.track.store import open_store

PNG = b"\x89PNG\r\n\x1a\n"

# (trial number, status, val_acc, macs, sparsity, period); macs in MACs. Sweep "a" then sweep "b".
SWEEP_A = [(1, "FINISHED", 0.80, 2.0e6, 0.5, 10), (2, "FINISHED", 0.70, 1.0e6, 0.7, 20),
           (3, "FINISHED", 0.75, 2.5e6, 0.4, 30),  # dominated by trial 1
           (4, "FAILED", None, None, 0.6, 40), (5, "FINISHED", 0.90, 4.0e6, 0.0, 50)]  # 5: the dense baseline
SWEEP_B = [(1, "FINISHED", 0.85, 3.0e6, 0.3, 60), (2, "RUNNING", 0.99, 0.5e6, 0.9, 70),  # unfinished: not ranked
           (3, "FINISHED", 0.70, 1.0e6, 0.7, 20)]  # a duplicate of sweep a's trial 2: both on the front


def add_sweep(client, experiment_id: str, name: str, trials, *, start: int, metrics=("val_acc", "macs")) -> dict:
    from mlflow.entities import Metric, Param

    parent = client.create_run(experiment_id, run_name=name, start_time=start,
                               tags={"chex.role": "sweep", "chex.sweep": name})
    ids = {}
    for number, status, acc, macs, sparsity, period in trials:
        run = client.create_run(experiment_id, run_name=f"{name}-trial-{number}", start_time=start + number, tags={
            "mlflow.parentRunId": parent.info.run_id, "chex.trial_id": f"{name}_{number}", "chex.sweep": name,
            "chex.searched": "period,sparsity", "chex.trial_number": str(number)})
        values = {"val_acc": acc, "test_acc": None if acc is None else acc - 0.01, "macs": macs,
                  "params": None if macs is None else macs / 10, "latency_ms": None if macs is None else macs / 1e6}
        logged = [Metric(k, v, 0, 1) for k, v in values.items() if v is not None and k in metrics]
        client.log_batch(run.info.run_id, metrics=logged, params=[
            Param("sparsity", str(float(sparsity))), Param("period", str(period)), Param("macs_target", "None"),
            Param("model", "test_resnet")])
        if status == "FAILED":
            client.set_tag(run.info.run_id, "error", "NonFiniteLossError: the training loss is nan")
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        ids[number] = run.info.run_id
    return {"parent": parent.info.run_id, "trials": ids}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment "sweeps" (two sweeps, every metric) and "bare" (val_acc and macs only)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    full = ("val_acc", "test_acc", "macs", "params", "latency_ms")
    experiment = client.create_experiment("sweeps", artifact_location=(root / "artifacts").as_uri())
    a = add_sweep(client, experiment, "a", SWEEP_A, start=1_000, metrics=full)
    b = add_sweep(client, experiment, "b", SWEEP_B, start=2_000, metrics=full)
    bare = client.create_experiment("bare", artifact_location=(root / "artifacts").as_uri())
    add_sweep(client, bare, "c", SWEEP_A[:2], start=3_000)
    return {"root": root, "client": client, "a": a, "b": b}


def pareto(store, *args):
    return main(["pareto", *args, "--store", str(store["root"])])


# ------------------------------------------------------------------------------------ read_trials
def test_trials_of_all_sweeps_are_ranked_together(store):
    client, _ = open_store(store["root"])
    trials = read_trials(client, "sweeps")
    a, b = store["a"]["trials"], store["b"]["trials"]
    assert [s["name"] for s in trials.sweeps] == ["b", "a"]  # newest first
    ranks = {row.run_id: row.rank for row in trials.rows}
    assert [ranks[a[n]] for n in (1, 2, 3, 4, 5)] == [0, 0, 1, -1, 0]
    assert [ranks[b[n]] for n in (1, 2, 3)] == [0, -1, 0]
    front = [row.run_id for row in trials.front]  # cheapest first; the two 1.0M trials tie
    assert set(front[:2]) == {a[2], b[3]} and front[2:] == [a[1], b[1], a[5]]
    one = read_trials(client, "sweeps", sweep="a")  # by name; by parent run id below
    assert {row.run_id for row in one.rows} == set(a.values())
    assert read_trials(client, "sweeps", sweep=store["b"]["parent"]).sweeps[0]["name"] == "b"


def test_tag_front_tags_finished_runs_only(store):
    client = store["client"]
    trials = read_trials(client, "sweeps")
    assert tag_front(client, trials.rows) == 6
    a, b = store["a"]["trials"], store["b"]["trials"]
    tags = {run_id: client.get_run(run_id).data.tags for run_id in [*a.values(), *b.values()]}
    assert (tags[a[1]]["pareto"], tags[a[1]]["pareto_rank"]) == ("true", "0")
    assert (tags[a[3]]["pareto"], tags[a[3]]["pareto_rank"]) == ("false", "1")
    assert "pareto" not in tags[a[4]] and "pareto" not in tags[b[2]]  # failed, still running


def test_dense_baseline_is_sparsity_zero_without_a_macs_target():
    assert is_dense_baseline({"sparsity": "0.0", "macs_target": "None"})
    assert is_dense_baseline({"sparsity": "0.0"})
    assert not is_dense_baseline({"sparsity": "0.0", "macs_target": "0.5"})
    assert not is_dense_baseline({"sparsity": "0.5", "macs_target": "None"})


# ------------------------------------------------------------------------------------ chex-tune pareto
def test_pareto_prints_the_front_cheapest_first_tags_and_plots(store, capsys):
    client = store["client"]
    a, b = store["a"]["trials"], store["b"]["trials"]
    for run_id in (a[1], a[3]):  # whatever an earlier reading left is overwritten
        client.set_tag(run_id, "pareto", "stale")
    assert pareto(store, "sweeps") == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ") and "run id" not in line]
    assert len(lines) == 5
    assert [line.split(" | ")[-1].rstrip(" |") for line in lines][2:] == [a[1], b[1], a[5]]
    assert "| 1.00M |" in lines[0] and "| 0.7000 |" in lines[0] and "| 0.6900 |" in lines[0]  # MACs, val, test
    assert "| 0.7 |" in lines[0] and "| 20 |" in lines[0]  # the searched settings: sparsity, period
    assert "5 of 6 finished trials on the Pareto front" in out and "failed trials: 1" in out
    assert "hypervolume" in out
    plot = store["root"] / "plots" / "sweeps-pareto.png"
    assert plot.read_bytes()[:8] == PNG
    assert client.get_run(a[1]).data.tags["pareto"] == "true"
    assert client.get_run(a[3]).data.tags["pareto"] == "false"
    for sweep in ("a", "b"):
        assert "pareto.png" in {f.path for f in client.list_artifacts(store[sweep]["parent"])}


def test_pareto_of_one_sweep_as_json_and_csv(store, tmp_path, capsys):
    plot = tmp_path / "figs" / "front.png"
    assert pareto(store, "sweeps", "--sweep", "a", "--format", "json", "--plot", str(plot)) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the data alone
    a = store["a"]["trials"]
    assert [r["run_id"] for r in data["front"]] == [a[2], a[1], a[5]]
    assert data["front"][0]["sparsity"] == "0.7" and data["front"][0]["macs"] == 1.0e6
    assert data["objectives"] == ["val_acc:max", "macs:min"] and data["finished"] == 4
    assert "tagged" in captured.err and plot.read_bytes()[:8] == PNG
    assert pareto(store, "sweeps", "--sweep", "a", "--format", "csv", "--plot", str(plot)) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("run_id,sweep,trial,val_acc,test_acc,macs,params,latency_ms")
    assert rows[1].startswith(f"{a[2]},a,2,0.7,")


def test_pareto_with_three_objectives(store, tmp_path, capsys):
    assert pareto(store, "sweeps", "--objectives", "val_acc:max,macs:min,latency_ms:min",
                  "--plot", str(tmp_path / "p.png")) == 0
    out = capsys.readouterr().out
    assert "latency_ms:min" in out and "hypervolume" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "no experiment 'nope' in the MLflow store; experiments: Default, bare, sweeps"),
    (["sweeps", "--sweep", "zzz"], "no sweep 'zzz' in experiment 'sweeps'; its sweeps: "),
    (["bare", "--objectives", "val_acc:max,latency_ms:min"],
     "objective 'latency_ms' was never logged by a run of experiment 'bare'; logged metrics: macs, val_acc"),
    (["sweeps", "--objectives", "val_acc:min"], "objective val_acc:min points the wrong way"),
])
def test_pareto_errors_are_one_clear_line(store, capsys, args, message):
    assert pareto(store, *args) == 2
    err = capsys.readouterr().err
    assert f"chex-tune pareto: error: {message}" in err and "Traceback" not in err


def test_a_missing_store_is_not_created(tmp_path, capsys):
    assert main(["pareto", "sweeps", "--store", str(tmp_path / "none")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------------ chex-tune export errors
@pytest.mark.parametrize(("args", "message"), [
    (["nope", "--max-macs", "1M"], "no experiment 'nope'"),
    (["sweeps", "--max-macs", "0.5M"], "no trial of experiment 'sweeps' on the val_acc/macs front has "
                                       "macs <= 500K; nearest: run "),
    (["bare", "--max-latency-ms", "5"], "objective 'latency_ms' was never logged by a run of experiment 'bare'"),
    (["sweeps", "--min-acc", "0.95"], "has val_acc >= 0.9500; nearest: run "),
    (["sweeps", "--min-acc", "95"], "--min-acc must be a validation accuracy in (0, 1]"),
    (["sweeps", "--max-macs", "lots"], "--max-macs must be a positive number like 2.5e6 or 2.5M"),
    (["sweeps", "--run", "abc"], "run 'abc' is not a trial of experiment 'sweeps'"),
    (["sweeps", "--max-macs", "1M", "--register", "m"], "--register NAME and --alias ALIAS go together"),
    (["sweeps", "--max-macs", "1M", "--register", "m", "--alias", "v2"], "--alias 'v2' is reserved"),
])
def test_export_errors_are_one_clear_line(store, tmp_path, capsys, args, message):
    out = tmp_path / "model.pt"
    assert main(["export", *args, "--format", "state", "-o", str(out), "--store", str(store["root"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chex-tune export: error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_nearest_candidates_are_the_closest_misses(store, tmp_path, capsys):
    assert main(["export", "sweeps", "--max-macs", "0.9M", "--format", "state", "-o", str(tmp_path / "m.pt"),
                 "--store", str(store["root"])]) == 2
    err = capsys.readouterr().err
    a, b = store["a"]["trials"], store["b"]["trials"]
    nearest = err.split("nearest: ")[1]
    assert nearest.index(a[2]) < nearest.index(a[1]) and a[5] not in nearest  # 1.0M, 1.0M, then 2.0M
    assert b[3] in nearest and "macs 1M" in nearest


def test_a_failed_run_is_not_exported(store, tmp_path, capsys):
    failed = store["a"]["trials"][4]
    assert main(["export", "sweeps", "--run", failed, "--format", "state", "-o", str(tmp_path / "m.pt"),
                 "--store", str(store["root"])]) == 2
    assert f"run {failed} did not finish (status FAILED: NonFiniteLossError" in capsys.readouterr().err


def test_the_commands_import_neither_ray_nor_optuna():
    code = ("import sys, chex_tune.cli, chex_tune.tuning.track.runs, chex_tune.tuning.track.store, "
            "chex_tune.tuning.tables, chex_tune.tuning.pareto; "
            "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
