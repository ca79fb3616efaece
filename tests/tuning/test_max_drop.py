"""--max-drop PT: a family stops descending at the first member more than PT points below the dense model; a sweep
keeps trials beyond it off the front (finished runs, tagged) and tells Optuna they are infeasible."""

from __future__ import annotations

import json
import math

import pytest

from chex_tune.cli import main
from chex_tune.config import RunConfig
from chex_tune.train.loop import train
from chex_tune.train.metrics import VAL_ACC
from chex_tune.tuning.family import run_family
from chex_tune.tuning.protocol import TrialRow
from chex_tune.tuning.reference import BEYOND_TAG, CONSTRAINT, MaxDrop, check_max_drop
from chex_tune.tuning.tables import trials_table
from chex_tune.tuning.track.runs import mark_beyond, rank

# 3 dense epochs on 256 images learn the synthetic set (val_acc 0.92 on the machine the numbers were chosen on);
# one fine-tune epoch keeps most of it at half the MACs (0.73) and loses it at 12% (0.06, chance): a max drop of
# 50 points sits far from both, so the decision does not hang on the last digit.
TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "batch_size": 32, "train_subset": 256,
        "val_size": 64, "device": "cpu"}
LEVELS = (0.5, 0.12, 0.03)
MAX_DROP = 50.0


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    train(RunConfig.from_dict({**TINY, "epochs": 3, "sparsity": 0.0}), out)
    return out / "compact.pt"


def test_a_family_stops_descending_at_the_first_member_beyond_max_drop(dense, tmp_path, capsys):
    from mlflow import MlflowClient

    lines = []
    result = run_family({**TINY, "epochs": 1}, levels=LEVELS, init=str(dense), store=str(tmp_path),
                        experiment="dropping", max_drop=MAX_DROP, log=lines.append)
    reference = result.reference[VAL_ACC]
    assert result.max_drop == MaxDrop(MAX_DROP, reference)
    drops = {m["key"]: (reference - m[VAL_ACC]) * 100 for m in result.members}
    # the members trained are the levels down to the first beyond the rule, and no smaller one
    beyond = [key for key, drop in drops.items() if drop > MAX_DROP]
    assert beyond == [result.stopped_at] == [result.members[-1]["key"]]
    assert all(drop <= MAX_DROP for key, drop in drops.items() if key != result.stopped_at)
    trained = [m["key"] for m in result.members]
    assert trained == [f"{level:g}" for level in LEVELS[:len(trained)]]
    assert result.not_trained == LEVELS[len(trained):] and result.not_trained  # it stopped before the end
    member = result.members[-1]
    said = (f"stopped descending at level {member['key']}: val_acc {member[VAL_ACC]:.4f} is "
            f"{drops[member['key']]:.2f} pt below dense {reference:.4f} (--max-drop 50); levels "
            f"{', '.join(f'{level:g}' for level in result.not_trained)} not trained")
    assert said in lines and str(result).splitlines()[-1] == said
    # the member beyond is a finished run, tagged and off the front; the parent run holds the rule
    client = MlflowClient(result.tracking_uri)
    runs = {m["key"]: client.get_run(m["run_id"]) for m in result.members}
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert {key for key, run in runs.items() if run.data.tags.get(BEYOND_TAG) == "true"} == {result.stopped_at}
    assert runs[result.stopped_at].data.tags["pareto"] == "false"
    ranks = {row.run_id: row.rank for row in result.rows}
    assert ranks[member["run_id"]] == -1 and 0 in ranks.values()
    parent = client.get_run(result.parent_run_id).data
    assert (parent.params["max_drop"], parent.metrics["dense_val_acc"]) == ("50.0", reference)
    # pareto reads the same rule back from the parent run
    capsys.readouterr()  # (what Ray printed while the family ran)
    assert main(["pareto", "dropping", "--store", str(tmp_path), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front["beyond_max_drop"] == 1 and front["finished"] == len(result.members)
    assert member["run_id"] not in {record["run_id"] for record in front["front"]}
    assert main(["pareto", "dropping", "--store", str(tmp_path)]) == 0
    assert "; 1 trial beyond --max-drop (not on the front)" in capsys.readouterr().out


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "2", True])
def test_a_max_drop_that_is_not_a_number_of_points_is_refused_before_any_work(tmp_path, value):
    with pytest.raises(ValueError, match=rf"--max-drop must be a number of percentage points >= 0 .* got {value!r}"):
        run_family(dict(TINY), levels=(0.5,), store=str(tmp_path), max_drop=value)
    assert not (tmp_path / "mlflow.db").exists()
    assert check_max_drop(0) == 0.0 and check_max_drop(None) is None


# ------------------------------------------------------------------------------------ the rule and the front
def row(run_id: str, val_acc: float, macs: float, status: str = "FINISHED") -> TrialRow:
    return TrialRow(run_id, "sweep", status, metrics={VAL_ACC: val_acc, "macs": macs}, number=int(run_id[1:]))


def test_the_rule_measures_points_below_the_reference_without_float_noise():
    rule = MaxDrop(1.0, 0.5)
    assert rule.drop(0.49) == 1.0 and not rule.beyond(0.49)  # (0.5 - 0.49) * 100 is 1.0000000000000009 unrounded
    assert rule.excess(0.48) == 1.0 and rule.beyond(0.48)
    assert rule.excess(0.52) == -3.0 and not rule.beyond(0.52)  # above the reference: feasible
    assert not rule.beyond(math.nan) and not rule.beyond(None)  # no val_acc: nothing to judge (not finished)


def test_trials_beyond_max_drop_are_left_off_the_front_and_counted():
    rows = [row("t1", 0.90, 4e6), row("t2", 0.88, 2e6), row("t3", 0.80, 1e6), row("t4", 0.70, 0.5e6),
            row("t5", 0.10, 0.1e6, status="FAILED")]
    rank(rows, "val_acc:max,macs:min")
    assert [r.rank for r in rows] == [0, 0, 0, 0, -1]  # without a rule: every finished trial on the front
    mark_beyond(rows, MaxDrop(5.0, 0.91))  # within 5 points of 0.91: t1 (1 pt) and t2 (3 pt)
    rank(rows, "val_acc:max,macs:min")
    assert [r.beyond_max_drop for r in rows] == [False, False, True, True, False]
    assert [r.rank for r in rows] == [0, 0, -1, -1, -1]
    table = trials_table(rows, "val_acc:max,macs:min")
    assert table.count("FINISHED (beyond --max-drop)") == 2
    assert table.splitlines()[-1] == ("2 of 5 trials on the Pareto front (val_acc:max, macs:min); failed trials: 1; "
                                      "2 trials beyond --max-drop (not on the front)")
    mark_beyond(rows, None)  # a sweep without the rule
    assert not any(r.beyond_max_drop for r in rows)


def test_the_parent_runs_record_is_the_rule_read_back():
    class Run:
        def __init__(self, params, metrics):
            self.data = type("Data", (), {"params": params, "metrics": metrics})()

    assert MaxDrop.of_run(Run({"max_drop": "2.5"}, {"dense_val_acc": 0.9})) == MaxDrop(2.5, 0.9)
    assert MaxDrop.of_run(Run({"max_drop": "None"}, {})) is None  # a sweep without --max-drop
    assert MaxDrop.of_run(Run({}, {})) is None  # a store from before --max-drop
    assert MaxDrop.of_run(Run({"max_drop": "2.5"}, {})) is None  # no reference recorded (yet)


def test_the_searcher_gives_each_finished_trial_its_constraint_before_optuna_is_told(tmp_path):
    import optuna

    from chex_tune.tuning.objectives import parse_objectives
    from chex_tune.tuning.searcher import ObjectiveGuard

    study = optuna.create_study(directions=["maximize", "minimize"],
                                storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")

    class Told:  # the OptunaSearch surface the guard uses: its trials by Ray id, and on_trial_complete
        def __init__(self):
            self._ot_trials = {}

        def on_trial_complete(self, trial_id, result=None, error=False):
            study.tell(self._ot_trials[trial_id], [result[VAL_ACC], result["macs"]])

    searcher = Told()
    guard = ObjectiveGuard(searcher, parse_objectives("val_acc:max,macs:min"), max_drop=MaxDrop(5.0, 0.91))
    for trial_id, val_acc in (("a", 0.90), ("b", 0.80)):
        searcher._ot_trials[trial_id] = study.ask()
        guard.on_trial_complete(trial_id, {VAL_ACC: val_acc, "macs": 1e6})
    constraints = [trial.constraints for trial in study.get_trials()]
    assert constraints == [{CONSTRAINT: -4.0}, {CONSTRAINT: 6.0}]  # 1 pt below (4 to spare), 11 pt below (6 over)
    assert [t.number for t in study.best_trials] == [0]  # Optuna's own front leaves the infeasible trial off


# ------------------------------------------------------------------------------------ a sweep from a trained start
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_sweep_with_max_drop_records_the_reference_and_keeps_trials_beyond_it_off_the_front(dense, tmp_path):
    import optuna
    from mlflow import MlflowClient

    from chex_tune.tuning.reference import dense_reference
    from chex_tune.tuning.space import SearchSpace
    from chex_tune.tuning.sweep import SweepOptions, run_sweep
    from chex_tune.tuning.track.store import optuna_storage_url

    space = SearchSpace.from_dict({"fixed": {**{k: v for k, v in TINY.items() if k != "device"}, "epochs": 1},
                                   "search": {"sparsity": {"low": 0.3, "high": 0.7}}}, source="dropping.yaml")
    lines = []
    result = run_sweep(space, SweepOptions(trials=2, concurrent=2, cpus_per_trial=1, store=str(tmp_path),
                                           experiment="sweep-drop", optuna_sampler="random", init=str(dense),
                                           max_drop=10.0), log=lines.append)
    reference = dense_reference(TINY, str(dense))[VAL_ACC]  # the trained start as given, on the trials' val split
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id).data
    assert (parent.params["max_drop"], parent.metrics["dense_val_acc"]) == ("10.0", reference)
    assert f"--max-drop 10 (dense val_acc {reference:.4f}): trials below val_acc {reference - 0.1:.4f} stay off " \
           "the front" in lines
    assert [row.status for row in result.rows] == ["FINISHED", "FINISHED"]
    for row in result.rows:  # each trial's tag and rank agree with its val_acc and the reference
        beyond = (reference - row.metrics[VAL_ACC]) * 100 > 10.0
        tags = client.get_run(row.run_id).data.tags
        assert row.beyond_max_drop == beyond and (tags.get(BEYOND_TAG) == "true") == beyond
        assert not beyond or (row.rank == -1 and tags["pareto"] == "false")
    assert any(row.rank == 0 for row in result.rows) == any(not row.beyond_max_drop for row in result.rows)
    study = optuna.load_study(study_name=result.sweep, storage=optuna_storage_url(tmp_path))
    told = sorted(round(t.values[0], 6) for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE)
    assert told == sorted(round(row.metrics[VAL_ACC], 6) for row in result.rows)
    for trial in study.get_trials():  # Optuna holds the same judgement as its constraint
        assert trial.constraints == {CONSTRAINT: MaxDrop(10.0, reference).excess(trial.values[0])}


def test_export_never_chooses_a_trial_beyond_the_max_drop():
    from types import SimpleNamespace

    from chex_tune.tuning.export.choose import Constraint, choose
    from chex_tune.tuning.protocol import TrialRow

    rows = [TrialRow("beyond", "s", "FINISHED", metrics={"val_acc": 0.95, "macs": 1e6}, beyond_max_drop=True),
            TrialRow("kept", "s", "FINISHED", metrics={"val_acc": 0.9, "macs": 3e6})]
    trials = SimpleNamespace(rows=rows, experiment="e")
    chosen, _ = choose(trials, Constraint.parse(max_macs="5M"))
    assert chosen.run_id == "kept"  # the better and cheaper trial is beyond the drop: never chosen
    with pytest.raises(ValueError, match="no trial of experiment 'e'"):  # the only member under 2M is beyond it
        choose(trials, Constraint.parse(max_macs="2M"))
