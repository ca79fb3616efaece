"""A family from one trained model: one compact member per budget, each a child run that pareto and export read."""

from __future__ import annotations

import json
import re

import pytest
import torch

from chex_tune import load_compact
from chex_tune.cli import main
from chex_tune.config import RunConfig
from chex_tune.train.loop import train
from chex_tune.tuning.family import run_family

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "batch_size": 32, "train_subset": 128,
        "val_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    train(RunConfig.from_dict({**TINY, "epochs": 1, "sparsity": 0.0}), out)
    return out / "compact.pt"


def test_a_cascade_family_makes_one_member_per_budget_each_from_the_one_before(dense, tmp_path):
    from mlflow import MlflowClient

    result = run_family({**TINY, "epochs": 1}, levels=(0.25, 0.5), init=str(dense), store=str(tmp_path),
                        experiment="cascade", log=lambda _m: None)
    members = result.members
    assert [m["key"] for m in members] == ["0.5", "0.25"]  # largest first: the cascade's order
    assert [round(m["macs_ratio"], 2) for m in members] == [0.5, 0.25]
    client = MlflowClient(result.tracking_uri)
    runs = {m["key"]: client.get_run(m["run_id"]) for m in members}
    assert runs["0.5"].data.params["init"] == str(dense)
    assert runs["0.25"].data.params["init"] == members[0]["path"]  # the cascade: from the previous member
    assert all(r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in runs.values())
    assert all(r.info.status == "FINISHED" and r.inputs.dataset_inputs for r in runs.values())
    small = load_compact(members[1]["path"])  # one recipe from the dense model, through two compactions
    assert sum(p.numel() for p in small.parameters()) == members[1]["params"]
    assert {row.rank for row in result.rows} <= {0, 1}


def test_an_independent_family_without_a_trained_start_trains_the_dense_model_first(tmp_path, capsys):
    code = main(["family", "--model", "test_resnet", "--dataset", "synthetic", "--stem", "timm", "--batch-size", "32",
                 "--train-subset", "128", "--val-size", "64", "--device", "cpu", "--levels", "0.5", "0.25",
                 "--shape", "independent", "--epochs", "1", "--dense-epochs", "1", "--store", str(tmp_path),
                 "--experiment", "independent"])
    printed = capsys.readouterr().out
    assert code == 0 and "member dense" in printed and "member 0.25" in printed
    assert main(["pareto", "independent", "--store", str(tmp_path), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front["finished"] == 3  # the dense model and two members, read as a sweep's trials
    from mlflow import MlflowClient

    from chex_tune.tuning.track.store import default_tracking_uri

    client = MlflowClient(default_tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("independent").experiment_id
    runs = {r.data.tags["chex.member"]: r for r in client.search_runs([experiment], "tags.`chex.member` LIKE '%'")}
    assert runs["dense"].data.metrics["macs"] == runs["dense"].data.metrics["dense_macs"]
    assert runs["dense"].data.params["sparsity"] == "0.0" and runs["dense"].data.params["init"] == "None"
    started_from = {runs[k].data.params["init"] for k in ("0.5", "0.25")}  # both from the dense member's model
    assert len(started_from) == 1 and next(iter(started_from)).endswith("compact.pt")
    assert {runs[k].data.tags["chex.parent_run"] for k in ("0.5", "0.25")} == {runs["dense"].info.run_id}


@pytest.mark.parametrize(("changes", "message"), [
    ({"shape": "ladder"}, "unknown family shape 'ladder'; choose one of: cascade, independent"),
    ({"levels": (0.5, 1.5)}, "--levels must be fractions of the dense MACs in (0, 1)"),
])
def test_bad_family_settings_are_refused_before_any_work(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_family(dict(TINY), **{"levels": (0.5,), "store": str(tmp_path), **changes})
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was made


# ------------------------------------------------------------------------------------ a user's own timm weights
R18 = ["--model", "resnet18", "--dataset", "synthetic", "--batch-size", "32", "--train-subset", "64", "--val-size",
       "32", "--device", "cpu", "--epochs", "1", "--levels", "0.5"]  # resnet18's timm stem: 9M MACs at 16 px


def timm_resnet18(path, in_chans: int, num_classes: int = 10):
    """timm.create_model("resnet18", ...)'s state_dict, as a user's own training loop saves it (timm's stem)."""
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", num_classes=num_classes, in_chans=in_chans).state_dict(), path)
    return path


def runs_in(store) -> int:
    from mlflow import MlflowClient

    from chex_tune.tuning.track.store import default_tracking_uri

    client = MlflowClient(default_tracking_uri(store))
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_ordinary_timm_weights_make_a_family_with_no_flag_beyond_init(tmp_path, capsys, in_chans):
    from mlflow import MlflowClient

    from chex_tune.tuning.track.store import default_tracking_uri

    weights = timm_resnet18(tmp_path / "mine.pt", in_chans)  # 3-channel synthetic images, either way
    code = main(["family", "--init", str(weights), *R18, "--store", str(tmp_path), "--experiment", "mine"])
    assert code == 0, capsys.readouterr().err
    client = MlflowClient(default_tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("mine").experiment_id
    member = client.search_runs([experiment], "tags.`chex.member` = '0.5'")[0]
    assert member.info.status == "FINISHED"
    assert (member.data.params["in_chans"], member.data.params["stem"]) == (str(in_chans), "timm")  # from the file
    assert member.data.params["stem_used"] == "timm"


@pytest.mark.parametrize(("flags", "message"), [
    (["--stem", "small"], "its weights were trained with the timm stem (conv1.weight (64, 1, 7, 7)) and this run "
                          "sets stem small; pass --stem timm, or leave stem out and --init sets it"),
    (["--set", "in_chans=3"], "its weights take 1 input channel (conv1.weight (64, 1, 7, 7)) and this run sets "
                              "in_chans 3; pass --set in_chans=1, or leave in_chans out and --init sets it"),
])
def test_weights_that_contradict_a_setting_are_refused_naming_the_flag_and_leave_no_run(tmp_path, capsys, flags,
                                                                                        message):
    from chex_tune.tuning.track.store import prepare_store

    weights = timm_resnet18(tmp_path / "mine.pt", 1)
    prepare_store(tmp_path)  # a store that exists: the refusal must add nothing to it
    code = main(["family", "--init", str(weights), *R18, *flags, "--store", str(tmp_path)])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (above it: MLflow's lines of the store made here)
    assert code == 2 and last == f"chex-tune family: error: --init {weights}: {message}"
    assert runs_in(tmp_path) == 0


def test_weights_of_other_classes_are_refused_before_any_run(tmp_path):
    from chex_tune.core.errors import UserError
    from chex_tune.tuning.track.store import prepare_store

    weights = timm_resnet18(tmp_path / "five.pt", 1, num_classes=5)
    prepare_store(tmp_path)
    with pytest.raises(UserError, match=re.escape(
            f"--init {weights}: its weights classify 5 classes (fc.weight (5, 512)) and dataset synthetic has 10")):
        run_family({**{k: v for k, v in TINY.items() if k != "stem"}, "model": "resnet18"}, levels=(0.5,),
                   init=str(weights), store=str(tmp_path))
    assert runs_in(tmp_path) == 0
