"""run_sweep with a user's own trainable: user objectives, a Ray the user started, and bad input.

Ray is started once here by the "user" (``ray.init`` with this directory on the workers' PYTHONPATH, as a
user's package would be installed); every sweep must run on it and leave it running.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import torch
import user_models

from chex_tune.tuning import ChexReporter, ChexSpace, SweepOptions, run_sweep
from chex_tune.tuning.pareto import non_dominated_ranks

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def users_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def tiny_trainable(config: dict) -> None:
    """The user's trainable; ``mode`` misbehaves on purpose for the bad-input test."""
    mode = config.get("mode", "ok")
    if mode == "silent":
        return  # never reports
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = user_models.data()
    model = user_models.build(width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    model.delay_s = 1.0 if mode == "slow_graph" else 0.0  # its graph build outlasts the 0.3 s limit below
    chex = ChexReporter(model, x[:2], config, total=6, optimizer=optimizer, builder="user_models:build",
                        builder_kwargs={"width": 8}, graph_timeout_s=0.3 if mode == "slow_graph" else 120.0)
    model.delay_s = 0.0
    user_models.train(model, optimizer, chex, x, y, epochs=2, steps=3)
    if mode == "no_objective":
        chex.finish()  # reports val_loss, val_acc, macs... but never val_map
    else:
        chex.finish(val_map=float(chex.last["val_acc"]) / 2)


def client_of(result):
    from mlflow import MlflowClient

    return MlflowClient(result.tracking_uri)


def options(tmp_path, name: str, trials: int) -> SweepOptions:
    return SweepOptions(trials=trials, concurrent=2, cpus_per_trial=1, store=str(tmp_path / "store"), experiment=name,
                        optuna_sampler="random", seed=3)


def test_a_user_metric_to_minimise_ranks_the_front_and_the_users_ray_stays_up(users_ray, tmp_path):
    from ray import tune

    result = run_sweep(tiny_trainable, options(tmp_path, "loss", 3), param_space={"lr": tune.uniform(0.01, 0.3)},
                       chex_space=ChexSpace(sparsity=(0.2, 0.8), period=(1, 3)), objectives="val_loss:min,macs:min")
    assert users_ray.is_initialized() and users_ray.cluster_resources()["CPU"] == 2  # the user's Ray, still up
    assert [row.status for row in result.rows] == ["FINISHED"] * 3
    values = [[row.metrics["val_loss"], row.metrics["macs"]] for row in result.rows]
    assert [row.rank for row in result.rows] == non_dominated_ranks(values, [False, False]).tolist()
    best_loss = min(result.rows, key=lambda row: row.metrics["val_loss"])
    cheapest = min(result.rows, key=lambda row: row.metrics["macs"])
    assert best_loss.rank == 0 and cheapest.rank == 0  # the extremes of a min/min front are on it
    worse = [r for r in result.rows if any(np.all(np.array(v) <= [r.metrics["val_loss"], r.metrics["macs"]])
                                           and v != [r.metrics["val_loss"], r.metrics["macs"]] for v in values)]
    assert all(row.rank > 0 for row in worse)
    client = client_of(result)
    for row in result.rows:
        run = client.get_run(row.run_id)
        assert run.data.tags["pareto"] == ("true" if row.rank == 0 else "false")
        assert run.data.tags["chex.searched"] == "lr,period,regrow_fraction,sparsity"
        assert float(run.data.params["regrow_ratio"]) == pytest.approx(
            float(run.data.params["regrow_fraction"]) * float(run.data.params["sparsity"]))
        assert run.data.params["builder"] == "user_models:build"
        assert [m.step for m in client.get_metric_history(row.run_id, "val_loss")] == [1, 2]
        assert "training_iteration" not in run.data.metrics and "time_total_s" not in run.data.metrics
    from chex_tune import load_compact

    model = load_compact(client.download_artifacts(result.rows[0].run_id, "compact.pt", str(tmp_path)))
    assert type(model).__name__ == "TinyNet"
    assert sum(p.numel() for p in model.parameters()) == result.rows[0].metrics["params"]


def test_trainables_that_never_report_or_miss_an_objective_fail_alone_with_the_reason(users_ray, tmp_path):
    """Once a trial has finished with every objective, a later one that misses one fails alone (one at a time, so
    the order is known)."""
    import optuna
    from ray import tune

    points = [{"mode": "ok"}, {"mode": "silent"}, {"mode": "no_objective"}]
    result = run_sweep(tiny_trainable, dataclasses.replace(options(tmp_path, "bad", 3), concurrent=1),
                       param_space={"lr": 0.1, "mode": tune.choice(["silent", "no_objective", "ok"])},
                       chex_space=ChexSpace(sparsity=0.5, regrow_fraction=0.5, period=2),
                       objectives="val_map:max,macs:min",
                       initial_points=points)
    assert users_ray.is_initialized()
    by_mode = {row.params["mode"]: row for row in result.rows}
    assert sorted(by_mode) == ["no_objective", "ok", "silent"]
    assert by_mode["ok"].status == "FINISHED" and by_mode["ok"].rank == 0
    assert by_mode["silent"].status == "FAILED"
    assert "without reporting any result" in by_mode["silent"].error
    assert by_mode["no_objective"].status == "FAILED"
    assert "objective(s) ['val_map'] never reported" in by_mode["no_objective"].error
    assert "val_acc" in by_mode["no_objective"].error  # what it did report
    study = optuna.load_study(study_name=result.sweep, storage=f"sqlite:///{tmp_path / 'store' / 'optuna.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL", "FAIL"]


def test_a_misspelt_objective_stops_the_sweep_at_the_first_finished_trial(users_ray, tmp_path):
    """The first trial to finish lacks an objective: the sweep stops with one error naming it and what was reported,
    instead of training every trial to the end for nothing."""
    from mlflow import MlflowClient
    from ray import tune

    settings = dataclasses.replace(options(tmp_path, "typo", 4), concurrent=1)
    with pytest.raises(ValueError, match=r"never reported objective\(s\) 'val_accuracy' \(did you mean 'val_acc'\?\); "
                                         r"it reported: .*val_acc.*val_loss"):
        run_sweep(tiny_trainable, settings, param_space={"lr": tune.uniform(0.05, 0.2)},
                  chex_space=ChexSpace(sparsity=0.5, regrow_fraction=0.5, period=2),
                  objectives="val_accuracy:max,macs:min")
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("typo").experiment_id
    parent, = client.search_runs([experiment], filter_string="tags.`chex.role` = 'sweep'")
    trials = client.search_runs([experiment], filter_string="tags.`chex.trial_id` LIKE '%'")
    assert parent.info.status == "FAILED"
    assert len(trials) < 4 and trials[0].info.status == "FAILED"  # stopped after the first, not all four trained


def plain_trainable(config: dict) -> None:
    """A trainable that knows nothing of chex-tune: it reports plain dicts to Tune, epoch after epoch."""
    from ray import tune

    for epoch in range(1, 4):
        tune.report({"val_acc": 0.5 + 0.1 * epoch * config["lr"], "macs": 1e6, "epoch": epoch})


def test_a_plain_trainable_missing_an_objective_stops_the_sweep_at_its_first_finished_trial(users_ray, tmp_path):
    """The objective check holds for any trainable that reports through tune.report, not only ChexReporter's final
    report: the first trial to end (Ray's last result, marked done) is judged."""
    from ray import tune

    settings = dataclasses.replace(options(tmp_path, "plain", 6), concurrent=1)
    with pytest.raises(ValueError, match=r"never reported objective\(s\) 'val_accuracy' \(did you mean 'val_acc'\?\); "
                                         r"it reported: .*macs.*val_acc"):
        run_sweep(plain_trainable, settings, param_space={"lr": tune.uniform(0.05, 0.2)},
                  objectives="val_accuracy:max,macs:min")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("plain").experiment_id
    trials = client.search_runs([experiment], filter_string="tags.`chex.trial_id` LIKE '%'")
    assert 1 <= len(trials) < 6  # stopped after the first, not all six run


def test_a_graph_build_that_runs_away_in_a_ray_trial_leaves_that_model_dense_with_the_warning(users_ray, tmp_path):
    """The time limit holds inside a Ray trial (a worker thread, where SIGALRM never arrives)."""
    from ray import tune

    result = run_sweep(tiny_trainable, options(tmp_path, "slow", 2),
                       param_space={"lr": 0.1, "mode": tune.choice(["slow_graph", "ok"])},
                       chex_space=ChexSpace(sparsity=0.5, regrow_fraction=0.5, period=2),
                       objectives="val_map:max,macs:min", initial_points=[{"mode": "slow_graph"}, {"mode": "ok"}])
    by_mode = {row.params["mode"]: row for row in result.rows}
    slow, ok = by_mode["slow_graph"], by_mode["ok"]
    assert slow.status == ok.status == "FINISHED"
    assert slow.metrics["sparsity"] == 0 and slow.metrics["macs"] == slow.metrics["dense_macs"]
    assert "TinyNet stays dense: building the channel dependency graph took over 0.3 s" in \
        slow.params["chex_warning"]
    assert ok.metrics["macs"] < ok.metrics["dense_macs"] and "chex_warning" not in ok.params


def test_a_space_that_collides_with_a_users_key_is_refused_before_anything_runs(tmp_path):
    from ray import tune

    with pytest.raises(ValueError, match=r"search space key\(s\) \['sparsity'\] are in two of the merged spaces"):
        run_sweep(tiny_trainable, options(tmp_path, "clash", 1), param_space={"sparsity": tune.uniform(0, 1)},
                  chex_space=ChexSpace())
    assert not (tmp_path / "store").exists()


def curve_trainable(config: dict) -> None:
    """Four epochs whose val_acc climbs to ``quality``; the CHEX budget is fixed, so trials differ in accuracy."""
    torch.set_num_threads(1)
    x, y = user_models.data()
    model = user_models.build(width=8)
    chex = ChexReporter(model, x[:2], config, total=4, builder="user_models:build", builder_kwargs={"width": 8})
    for epoch in range(1, 5):
        chex.step()
        chex.report(val_acc=config["quality"] * epoch / 4)
    chex.finish()


def test_early_stopping_stops_dominated_trials_as_killed_runs_and_pruned_optuna_trials(users_ray, tmp_path, capsys):
    """Trials one at a time (a known order): at rung 1 the weaker of two stops, the better goes on."""
    import dataclasses

    import optuna
    from ray import tune

    from chex_tune.cli import main

    qualities = [0.9, 0.5, 0.95, 0.3]
    settings = dataclasses.replace(options(tmp_path, "early", 4), concurrent=1, early_stop=True, grace=1, eta=2)
    result = run_sweep(curve_trainable, settings, param_space={"quality": tune.uniform(0.1, 1.0)},
                       chex_space=ChexSpace(sparsity=0.5, regrow_fraction=0.5, period=2),
                       initial_points=[{"quality": q} for q in qualities])
    by_quality = {float(row.params["quality"]): row for row in result.rows}
    assert sorted(by_quality) == sorted(qualities)
    assert [by_quality[q].status for q in qualities] == ["FINISHED", "KILLED", "FINISHED", "KILLED"]
    assert [by_quality[q].stopped_at for q in qualities] == [None, 1, None, 1]
    assert not result.interrupted and len(result.stopped) == 2
    client = client_of(result)
    for quality in (0.5, 0.3):
        run_id = by_quality[quality].run_id
        assert client.get_run(run_id).data.tags["chex.stopped_at_epoch"] == "1"
        assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1]  # its partial metrics
        assert "compact.pt" not in {f.path for f in client.list_artifacts(run_id)}  # and no model
    assert [row.rank for row in result.rows if row.stopped_at is not None] == [-1, -1]  # never on a front
    study = optuna.load_study(study_name=result.sweep, storage=f"sqlite:///{tmp_path / 'store' / 'optuna.db'}")
    states = {t.params["quality"]: t.state.name for t in study.trials}
    assert [states[q] for q in qualities] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    assert study.metric_names == ["val_acc", "macs"]  # optuna-dashboard shows these names, not "Objective 0"
    assert {t.params["quality"]: t.user_attrs["mlflow_run_id"] for t in study.trials} == {
        q: by_quality[q].run_id for q in qualities}
    assert sorted(t.user_attrs.get("stopped_at_epoch") for t in study.trials if t.state.name == "PRUNED") == [1, 1]

    # resuming the finished sweep re-runs nothing: the stopped trials stay stopped
    resumed = run_sweep(curve_trainable, dataclasses.replace(settings, resume=True),
                        param_space={"quality": tune.uniform(0.1, 1.0)},
                        chex_space=ChexSpace(sparsity=0.5, regrow_fraction=0.5, period=2))
    assert not resumed.interrupted
    assert sorted((r.run_id, r.status) for r in resumed.rows) == sorted((r.run_id, r.status) for r in result.rows)
    assert len(optuna.load_study(study_name=result.sweep,
                                 storage=f"sqlite:///{tmp_path / 'store' / 'optuna.db'}").trials) == 4

    # pareto leaves the stopped trials out and says so; --include-stopped ranks them on their last epoch
    import json

    store, plot = str(tmp_path / "store"), str(tmp_path / "p.png")
    capsys.readouterr()
    assert main(["pareto", "early", "--store", store, "--plot", plot, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["stopped"] == 2 and listed["finished"] == 2
    assert {r["run_id"] for r in listed["front"]} <= {by_quality[q].run_id for q in (0.9, 0.95)}
    assert main(["pareto", "early", "--store", store, "--plot", plot]) == 0
    assert "stopped early: 2 (not on the front; --include-stopped ranks them)" in capsys.readouterr().out
    assert main(["pareto", "early", "--store", store, "--plot", plot, "--include-stopped", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["front"]) >= 1
