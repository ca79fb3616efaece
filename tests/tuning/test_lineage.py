"""Trials that inherit: which finished trial a new one starts from, and a sweep whose later trials start from its
earlier ones (the parent's compact model as the start, the parent's run as lineage)."""

from __future__ import annotations

import json
import pathlib
import types

import pytest

from chex_tune.config import RunConfig
from chex_tune.train.loop import train
from chex_tune.train.weights import file_digest
from chex_tune.tuning.lineage import Finished, Lineage, best, nearest
from chex_tune.tuning.protocol import FIXED_KEY, PARENT_KEY, SEARCHED_KEY
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "batch_size": 32, "train_subset": 128,
        "val_size": 64}
FINISHED = [Finished("a", 0.50, 0.80, "a.pt"), Finished("b", 0.30, 0.78, "b.pt"),
            Finished("c", 0.40, 0.70, "c.pt"),  # dominated by b: fewer MACs and more accurate
            Finished("d", 0.20, 0.60, "d.pt")]


def test_nearest_takes_the_smallest_front_member_and_best_the_most_accurate():
    assert nearest(FINISHED).trial_id == "d"
    assert nearest([f for f in FINISHED if f.macs_ratio > 0.25]).trial_id == "b"  # c is off the front
    assert best([f for f in FINISHED if f.macs_ratio > 0.25]).trial_id == "a"


def fake_trial(trial_id: str, path: pathlib.Path, **last):
    return types.SimpleNamespace(trial_id=trial_id, status="TERMINATED", last_result=last,
                                 checkpoint=types.SimpleNamespace(path=str(path)))


def test_a_suggestion_gets_the_nearest_finished_trial_above_its_budget_or_none(tmp_path):
    for name in ("big", "small"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "compact.pt").write_bytes(b"")
    lineage = Lineage({"epochs": 1})
    lineage.on_step_begin(0, [fake_trial("big", tmp_path / "big", chex_final=True, macs_ratio=0.5, val_acc=0.8),
                              fake_trial("small", tmp_path / "small", chex_final=True, macs_ratio=0.25, val_acc=0.7),
                              fake_trial("stopped", tmp_path / "big", macs_ratio=0.1, val_acc=0.9)])  # no final
    assert sorted(lineage.finished) == ["big", "small"]
    assert lineage.with_parent({"macs_target": 0.3})[PARENT_KEY] == {"path": str(tmp_path / "big" / "compact.pt"),
                                                                     "trial_id": "big"}
    assert lineage.with_parent({"macs_target": 0.12})[PARENT_KEY]["trial_id"] == "small"
    assert PARENT_KEY not in lineage.with_parent({"macs_target": 0.6})  # nothing above: the trained start
    assert PARENT_KEY not in lineage.with_parent({"sparsity": 0.5})  # no MACs budget: no parent
    fixed = Lineage({"macs_target": 0.2})
    fixed.finished = lineage.finished
    assert fixed.with_parent({FIXED_KEY: {}, SEARCHED_KEY: []})[PARENT_KEY]["trial_id"] == "small"
    with pytest.raises(ValueError, match=r"unknown parent rule 'closest'; choose one of: nearest, best"):
        Lineage(rule="closest")
    from chex_tune.tuning.reference import MaxDrop

    ruled = Lineage({}, max_drop=MaxDrop(5.0, 0.8))  # at most 5 points below 0.8: "small" (0.7) is beyond it
    ruled.on_step_begin(0, [fake_trial("big", tmp_path / "big", chex_final=True, macs_ratio=0.5, val_acc=0.8),
                            fake_trial("small", tmp_path / "small", chex_final=True, macs_ratio=0.25, val_acc=0.7)])
    assert sorted(ruled.finished) == ["big"]
    assert ruled.with_parent({"macs_target": 0.12})[PARENT_KEY]["trial_id"] == "big"


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_an_inheriting_sweep_starts_its_later_trials_from_its_earlier_ones(tmp_path):
    train(RunConfig.from_dict({**TINY, "epochs": 1, "sparsity": 0.0, "device": "cpu"}), tmp_path / "dense")
    space = SearchSpace.from_dict({"fixed": {**TINY, "epochs": 1},
                                   "search": {"macs_target": {"low": 0.2, "high": 0.6}}}, source="ladder.yaml")
    result = run_sweep(space, SweepOptions(trials=2, concurrent=1, cpus_per_trial=1, store=str(tmp_path / "store"),
                                           experiment="inherit", optuna_sampler="random", inherit=True,
                                           ladder="0.25,0.5", init=str(tmp_path / "dense" / "compact.pt")))
    first, second = sorted(result.rows, key=lambda row: row.number)
    assert [first.status, second.status] == ["FINISHED", "FINISHED"]
    assert float(first.params["macs_target"]) == 0.5 and float(second.params["macs_target"]) == 0.25  # large first
    assert first.parent_run is None and second.parent_run == first.run_id == second.params["parent_run"]
    from mlflow import MlflowClient

    client = MlflowClient(result.tracking_uri)
    files = {row.number: pathlib.Path(client.download_artifacts(row.run_id, "", str(tmp_path / f"get{row.number}")))
             for row in (first, second)}
    lineage = json.loads((files[second.number] / "metrics.json").read_text())["lineage"]
    assert lineage["init_digest"] == file_digest(files[first.number] / "compact.pt")  # started from the parent
    assert second.metrics["macs_ratio"] == pytest.approx(0.25, abs=0.04)  # still a fraction of the dense model's
    assert first.metrics["dense_macs"] == second.metrics["dense_macs"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"init": None}, r"--inherit needs a trained start: give --init WEIGHTS"),
    ({"space": {"sparsity": {"low": 0.3, "high": 0.6}}}, r"--inherit needs a MACs budget: s.yaml has no macs_target"),
    ({"inherit": False, "ladder": "0.5,1.5"}, r"--ladder must be MACs budgets, fractions in \(0, 1\)"),
    ({"inherit": False, "ladder": "0.5,0.1"}, r"--ladder 0.1: outside the space's macs_target range \[0.2, 0.6\]"),
])
def test_inheritance_mistakes_are_refused_before_any_trial(tmp_path, changes, message):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    search = changes.get("space", {"macs_target": {"low": 0.2, "high": 0.6}})
    space = SearchSpace.from_dict({"fixed": {**TINY, "epochs": 1}, "search": search}, source="s.yaml")
    options = {"inherit": True, "init": str(weights), "store": str(tmp_path / "store"), **changes}
    options.pop("space", None)
    with pytest.raises(ValueError, match=message):
        run_sweep(space, SweepOptions(**options))


def test_the_trials_table_shows_where_each_inheriting_trial_came_from():
    from chex_tune.tuning.protocol import TrialRow
    from chex_tune.tuning.tables import trials_table

    rows = [TrialRow("r1", "s", "FINISHED", number=1, metrics={"val_acc": 0.8, "macs": 2e6}, rank=0),
            TrialRow("r2", "s", "FINISHED", number=2, metrics={"val_acc": 0.7, "macs": 1e6}, rank=0, parent_run="r1")]
    lines = trials_table(rows, "val_acc:max,macs:min").splitlines()
    assert lines[0].startswith("| front | trial | from | status |")
    cells = {line.split("|")[2].strip(): line.split("|")[3].strip() for line in lines[2:4]}
    assert cells == {"1": "-", "2": "1"}  # trial 2 started from trial 1, trial 1 from the trained model
    assert "| from |" not in trials_table(rows[:1], "val_acc:max,macs:min")  # no inheritance: no column
