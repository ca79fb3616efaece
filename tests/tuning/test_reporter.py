"""ChexReporter in a plain loop and with Optuna; custom models saved and loaded by an importable builder."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import optuna
import pytest
import torch
import user_models

from chex_tune import load_compact
from chex_tune.core.builders import build_from_reference, builder_reference
from chex_tune.tuning import BuilderImportError, ChexReporter, ChexSpace, OptunaMlflowCallback

HERE = pathlib.Path(__file__).parent
CONFIG = {"sparsity": 0.5, "regrow_fraction": 0.5, "period": 2}


def trained(tmp_path, config=CONFIG, **options):
    torch.manual_seed(0)
    x, y = user_models.data()
    model = user_models.build(width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    reporter = ChexReporter(model, x[:2], config, total=8, optimizer=optimizer, builder="user_models:build",
                            builder_kwargs={"width": 8}, out_dir=tmp_path / "trial", **options)
    user_models.train(model, optimizer, reporter, x, y, epochs=2, steps=4)
    return model, reporter, x


def test_a_plain_loop_reports_costs_and_ends_in_an_equal_compact_model(tmp_path):
    model, reporter, x = trained(tmp_path)
    assert [entry["epoch"] for entry in reporter.history] == [1, 2]
    assert {"val_loss", "val_acc", "macs", "params", "sparsity"} <= set(reporter.history[-1])
    result = reporter.finish(val_acc=0.75)
    assert result.metrics["val_acc"] == 0.75 and result.metrics["val_loss"] == reporter.history[-1]["val_loss"]
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=0.07)
    assert result.metrics["macs"] < result.metrics["dense_macs"]
    assert result.metrics["params"] == sum(p.numel() for p in result.model.parameters())
    assert sorted(p.name for p in result.path.iterdir()) == ["chex.yaml", "compact.pt", "metrics.json",
                                                             "widths.json"]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(load_compact(result.path / "compact.pt")(x), model(x), rtol=1e-4, atol=1e-5)
    history = json.loads((result.path / "metrics.json").read_text())["history"]
    assert [entry["epoch"] for entry in history] == [1, 2]
    with pytest.raises(ValueError, match=r"objective\(s\) \['val_map'\] were never reported; reported metrics:"):
        result.values("val_map:max,macs:min")
    assert result.values("val_acc:max,macs:min") == (0.75, result.metrics["macs"])


def test_the_compact_model_reloads_in_a_fresh_process_without_pickle(tmp_path):
    model, reporter, x = trained(tmp_path)
    path = reporter.finish().path / "compact.pt"
    torch.save(x, tmp_path / "x.pt")
    model.eval()
    with torch.no_grad():
        torch.save(model(x), tmp_path / "expected.pt")
    script = f"""
import pickle
def refuse(*args, **kwargs):
    raise AssertionError("pickle was used")
pickle.load = pickle.loads = pickle.Unpickler = refuse
import torch
plain_load = torch.load
def weights_only_load(*args, **kwargs):
    assert kwargs.get("weights_only", True) is True, "torch.load without weights_only"
    return plain_load(*args, **kwargs)
torch.load = weights_only_load
import chex_tune.tuning  # registers the "module:function" builder
from chex_tune import load_compact
small = load_compact({str(path)!r})
assert type(small).__name__ == "TinyNet" and type(small).__module__ == "user_models"
x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
with torch.no_grad():
    torch.testing.assert_close(small(x), expected, rtol=1e-4, atol=1e-5)
print("reloaded", sum(p.numel() for p in small.parameters()))
"""
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reloaded", str(sum(p.numel() for p in reporter.result.model.parameters()))]


def test_builders_that_cannot_be_imported_or_do_not_rebuild_the_model_are_named(tmp_path):
    with pytest.raises(BuilderImportError, match=r"cannot import model builder 'no_such_pkg\.models:build'.*"
                                                  r"No module named 'no_such_pkg'"):
        build_from_reference("no_such_pkg.models:build")
    with pytest.raises(BuilderImportError, match=r"'user_models:nope'.*has no attribute 'nope'"):
        build_from_reference("user_models:nope")
    with pytest.raises(BuilderImportError, match=r"builder 'user_models\.build' must look like"):
        builder_reference("user_models.build")
    assert builder_reference(user_models.build) == "user_models:build"
    model, x = user_models.build(width=8), torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"builds a different model than the one given \(16 tensors differ: "
                                        r"block\.0\.weight: \(16, 8, 3, 3\) vs \(8, 4, 3, 3\)"):
        ChexReporter(model, x, CONFIG, total=4, builder="user_models:build", builder_kwargs={"width": 4})
    with pytest.raises(ValueError, match=r"ChexReporter needs builder= for a TinyNet"):
        ChexReporter(model, x, CONFIG, total=4)
    with pytest.raises(ValueError, match=r"builder_kwargs\['width'\] must be plain data"):
        ChexReporter(model, x, CONFIG, total=4, builder="user_models:build", builder_kwargs={"width": torch.tensor(8)})


def test_a_compact_file_whose_builder_is_gone_names_it_on_load(tmp_path):
    _, reporter, _ = trained(tmp_path)
    payload = torch.load(reporter.finish().path / "compact.pt", weights_only=True)
    payload["model_name"] = "moved_away.models:build"
    torch.save(payload, tmp_path / "moved.pt")
    with pytest.raises(ValueError, match=r"cannot import model builder 'moved_away\.models:build'"):
        load_compact(tmp_path / "moved.pt")


def test_optuna_trials_report_and_are_recorded_in_mlflow(tmp_path):
    from mlflow import MlflowClient

    space = ChexSpace(sparsity=(0.3, 0.6), period=(1, 3))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def objective(trial):
        _, reporter, _ = trained(tmp_path / str(trial.number), space.suggest(trial), trial=trial)
        return reporter.finish().values("val_loss:min,macs:min")

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    with OptunaMlflowCallback("optuna", objectives="val_loss:min,macs:min", tracking_uri=uri) as record:
        study.optimize(objective, n_trials=2, callbacks=[record])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("optuna").experiment_id],
                              "tags.`chex.trial_id` LIKE '%'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    by_number = {int(r.data.tags["chex.trial_id"]): r for r in runs}
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.data.metrics["val_loss"] == pytest.approx(trial.values[0])
        assert run.data.metrics["macs"] == trial.values[1]
        assert float(run.data.params["sparsity"]) == pytest.approx(trial.params["sparsity"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
        assert {"compact.pt", "widths.json", "metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    front = {r.info.run_id for r in runs if r.data.tags.get("pareto") == "true"}
    assert front == {by_number[t.number].info.run_id for t in study.best_trials}


def test_an_optuna_trial_stopped_early_is_a_killed_run_read_back_as_stopped_at_its_epoch(tmp_path):
    """A single-objective study whose pruner stops a trial (Optuna's "pruned"): the run is KILLED and tagged with the
    epoch it was stopped at, the tag TrialRow reads, so the trial counts as stopped, not as failed or unfinished."""
    from mlflow import MlflowClient

    from chex_tune.tuning.protocol import TrialRow

    class StopAtOnce(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def objective(trial):
        _, reporter, _ = trained(tmp_path / str(trial.number), trial=trial, monitor="val_acc")
        return reporter.finish().values("val_acc:max")[0]

    study = optuna.create_study(direction="maximize", pruner=StopAtOnce())
    with OptunaMlflowCallback("stopped", objectives="val_acc:max", tracking_uri=uri) as record:
        study.optimize(objective, n_trials=1, callbacks=[record])
    assert study.trials[0].state.name == "PRUNED"
    client = MlflowClient(uri)
    run, = client.search_runs([client.get_experiment_by_name("stopped").experiment_id], "tags.`chex.trial_id` LIKE '%'")
    row = TrialRow.from_run(run)
    assert row.status == "KILLED" and row.stopped_at == 1


def test_monitor_is_refused_for_multi_objective_studies():
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="Optuna cannot stop trials of a multi-objective study early"):
        ChexReporter(user_models.build(), torch.randn(2, 1, 8, 8), CONFIG, total=4, builder="user_models:build",
                     trial=study.ask(), monitor="val_acc")


@pytest.mark.parametrize(("tags", "stopped_at"), [({"chex.stopped_at_epoch": "3"}, 3), ({"chex.stopped": "true"}, 0),
                                                  ({}, None)])
def test_a_run_reads_back_as_stopped_from_either_tag_an_old_store_wrote(tags, stopped_at):
    from types import SimpleNamespace

    from chex_tune.tuning.protocol import TrialRow

    run = SimpleNamespace(info=SimpleNamespace(run_id="r", status="KILLED"),
                          data=SimpleNamespace(tags=tags, params={}, metrics={}))
    assert TrialRow.from_run(run).stopped_at == stopped_at


def test_a_compact_start_is_compressed_further_against_its_dense_models_macs(tmp_path):
    """A parent's compact model (what parent_model(config) hands a trial): its budget and macs_ratio stay fractions
    of the dense model its recipe names, and its builder comes from that recipe."""
    _, first, x = trained(tmp_path, {"macs_target": 0.5, "regrow_ratio": 0.0, "explore_until": 0.01})
    parent = first.finish()
    start = load_compact(parent.path / "compact.pt")
    optimizer = torch.optim.SGD(start.parameters(), lr=0.1)
    second = ChexReporter(start, x[:2], {"macs_target": 0.25, "regrow_ratio": 0.0, "explore_until": 0.01}, total=8,
                          optimizer=optimizer, out_dir=tmp_path / "child")  # no builder: the recipe's
    assert (second.dense_macs, second.dense_params) == (parent.metrics["dense_macs"], parent.metrics["dense_params"])
    user_models.train(start, optimizer, second, *user_models.data(), epochs=2, steps=4)
    child = second.finish()
    assert child.metrics["dense_macs"] == parent.metrics["dense_macs"]
    assert child.metrics["macs_ratio"] == pytest.approx(0.25, abs=0.05)
    assert child.metrics["macs"] < parent.metrics["macs"]
    assert load_compact(child.path / "compact.pt").chex_recipe["model_name"] == "user_models:build"


def test_inherit_with_a_users_trainable_needs_a_macs_budget_and_a_family_takes_no_init():
    from chex_tune.tuning import SweepOptions, run_family, run_sweep

    def trainable(config):
        raise AssertionError("never run")

    with pytest.raises(ValueError, match=r"inherit=True needs a MACs budget in chex_space"):
        run_sweep(trainable, SweepOptions(inherit=True), chex_space=ChexSpace(sparsity=(0.2, 0.6)))
    with pytest.raises(ValueError, match=r"init: the built-in loop's; your trainable loads its own trained model"):
        run_family(trainable, levels=(0.5,), init="dense.pt")
    with pytest.raises(ValueError, match=r"a family searches nothing: chex_space samples \['period'\]"):
        run_family(trainable, levels=(0.5,), chex_space=ChexSpace(macs_target=0.5, regrow_ratio=0.0))
