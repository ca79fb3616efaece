"""A sweep from a trained model: every trial forks from it, named by an MLflow URI, with its lineage recorded."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from chex_tune.config import RunConfig
from chex_tune.train.loop import train
from chex_tune.train.weights import file_digest
from chex_tune.tuning.space import SearchSpace
from chex_tune.tuning.sweep import SweepOptions, run_sweep
from chex_tune.tuning.track.store import default_tracking_uri, prepare_store

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "batch_size": 32, "train_subset": 128,
        "val_size": 64}
SPACE = {"fixed": {**TINY, "epochs": 2}, "search": {"sparsity": {"low": 0.3, "high": 0.7}}}


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """A trained dense model logged as an MLflow run's compact.pt, in the store the sweep will use."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("trained")
    train(RunConfig.from_dict({**TINY, "epochs": 1, "sparsity": 0.0, "device": "cpu"}), root / "dense")
    store, uri = prepare_store(root / "store")
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("dense"))
    client.log_artifact(run.info.run_id, str(root / "dense" / "compact.pt"))
    client.set_terminated(run.info.run_id)
    return store, run.info.run_id, root / "dense" / "compact.pt"


def test_a_sweep_with_a_trained_start_forks_every_trial_from_it_and_records_where_it_came_from(dense_run):
    from mlflow import MlflowClient

    store, run_id, weights = dense_run
    space = SearchSpace.from_dict(SPACE, source="trained.yaml")
    result = run_sweep(space, SweepOptions(trials=2, concurrent=2, cpus_per_trial=1, store=str(store),
                                           experiment="forked", optuna_sampler="random", init=f"runs:/{run_id}"))
    assert [row.status for row in result.rows] == ["FINISHED", "FINISHED"]
    client = MlflowClient(default_tracking_uri(store))
    for row in result.rows:
        assert row.params["init"] == str(store / "init" / f"{run_id}-compact.pt")
        assert row.params["init_digest"] == file_digest(weights)  # the downloaded file is the logged one
        assert row.params["norm_init"] == "None" and row.params["lr"] == "0.02"  # a fine-tune's defaults
        inputs = client.get_run(row.run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.tags[0].value) for i in inputs] == [("synthetic", "training")]
        assert len(inputs[0].dataset.digest) == 16
        chex = yaml.safe_load(pathlib.Path(client.download_artifacts(row.run_id, "chex.yaml", str(store))).read_text())
        assert chex["builder"] == "test_resnet" and 0.3 <= chex["chex"]["sparsity"] <= 0.7


def test_a_trained_start_that_cannot_be_read_stops_the_sweep_before_any_trial(dense_run, tmp_path):
    store, _, _ = dense_run
    space = SearchSpace.from_dict(SPACE, source="trained.yaml")
    options = SweepOptions(trials=2, store=str(store), experiment="never", init="runs:/0123456789abcdef")
    with pytest.raises(ValueError, match=r"--init runs:/0123456789abcdef: Run .*0123456789abcdef.* not found"):
        run_sweep(space, options)
    other = {**SPACE, "fixed": {**SPACE["fixed"], "model": "resnet18"}}
    with pytest.raises(ValueError, match=r"its weights do not fit the model"):
        run_sweep(SearchSpace.from_dict(other, source="other.yaml"),
                  SweepOptions(trials=2, store=str(store), experiment="never", init=str(dense_run[2])))


@pytest.mark.parametrize(("lr", "warned"), [(0.1, True), (0.02, False), (None, False)])
def test_a_trained_start_in_a_space_with_a_from_scratch_rate_is_warned_about(caplog, lr, warned):
    from chex_tune.tuning.sweep import warn_from_scratch_schedule

    fixed = {**TINY, **({} if lr is None else {"lr": lr})}
    with caplog.at_level("WARNING", logger="chex_tune.tuning.sweep"):
        warn_from_scratch_schedule(SearchSpace.from_dict({**SPACE, "fixed": fixed}, source="s.yaml"))
    messages = [r.getMessage() for r in caplog.records]
    assert bool(messages) == warned
    if warned:
        assert messages == ["trials fork from trained weights, but this space fixes lr 0.1 (the fine-tune default is "
                            "0.02, measured in benchmarks/front.md): a from-scratch rate undoes much of the training. "
                            "For a fine-tune, use a space made for it (fashion_mnist_resnet18_finetune) or fix a "
                            "smaller lr"]


def test_a_sweep_takes_input_channels_and_stem_from_the_weights_and_a_space_that_contradicts_them_is_refused(tmp_path):
    import re

    import timm
    import torch
    from mlflow import MlflowClient

    from chex_tune.core.errors import UserError
    from chex_tune.tuning.protocol import FIXED_KEY
    from chex_tune.tuning.trainable import builtin_constants

    weights = tmp_path / "grey.pt"  # an ordinary timm resnet18 on 1-channel images: timm's 7x7 stem
    torch.save(timm.create_model("resnet18", num_classes=10, in_chans=1).state_dict(), weights)
    fixed = {**{k: v for k, v in TINY.items() if k != "stem"}, "model": "resnet18"}
    space = SearchSpace.from_dict({**SPACE, "fixed": fixed}, source="r18.yaml")
    constants = builtin_constants(space, {"epochs": 1}, device="cpu", threads=1, init=str(weights))
    assert (constants[FIXED_KEY]["in_chans"], constants[FIXED_KEY]["stem"]) == (1, "timm")  # every trial gets them
    small = SearchSpace.from_dict({**SPACE, "fixed": {**fixed, "stem": "small"}}, source="small.yaml")
    store, uri = prepare_store(tmp_path / "store")
    with pytest.raises(UserError, match=re.escape(
            f"--init {weights}: its weights were trained with the timm stem (conv1.weight (64, 1, 7, 7)) and this run "
            "sets stem small; pass 'stem: timm' under the space's fixed, or leave stem out and --init sets it")):
        run_sweep(small, SweepOptions(trials=2, store=str(store), experiment="never", init=str(weights)))
    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # refused before any run
