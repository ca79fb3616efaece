"""A trained start (``init``): the weight files a user may bring, the checks before any work, and the fine-tune."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from chex_tune import load_compact
from chex_tune.cli import main
from chex_tune.config import FINETUNE, RunConfig
from chex_tune.core.errors import UserError
from chex_tune.train.loop import train
from chex_tune.train.weights import file_digest, load_trained, read_state_dict

TINY = {"model": "test_resnet", "dataset": "synthetic", "stem": "timm", "epochs": 1, "batch_size": 32,
        "train_subset": 128, "val_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A trained dense run: its compact.pt (nothing removed) and its model."""
    out = tmp_path_factory.mktemp("dense")
    train(RunConfig.from_dict({**TINY, "sparsity": 0.0}), out)
    return out / "compact.pt", load_compact(out / "compact.pt")


def fresh_model():
    from chex_tune.train.models import create_model

    return create_model("test_resnet", num_classes=10, in_chans=3, stem="timm")


def assert_same_weights(model, reference) -> None:
    for (name, mine), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(mine, theirs), name


@pytest.mark.parametrize("form", ["compact", "state_dict", "checkpoint", "ddp", "safetensors"])
def test_every_form_of_weights_file_loads_the_same_weights(dense, tmp_path, form):
    compact, trained = dense
    state = trained.state_dict()
    path = tmp_path / "weights.pt"
    if form == "compact":
        path = compact
    elif form == "state_dict":
        torch.save(state, path)
    elif form == "checkpoint":  # Lightning's and most training scripts' layout
        torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": torch.tensor(0.1)}}, path)
    elif form == "ddp":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = fresh_model()
    load_trained(model, path)
    assert_same_weights(model, trained)


def test_files_that_cannot_start_a_run_are_refused_with_the_reason(dense, tmp_path):
    compact, trained = dense
    with pytest.raises(UserError, match=r"no such file"):
        read_state_dict(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match=r"damaged or not a weights file"):
        read_state_dict(tmp_path / "garbage.pt")
    torch.save({"epoch": 3, "notes": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match=r"a dict without model weights \(keys \['epoch', 'notes'\]\)"):
        read_state_dict(tmp_path / "empty.pt")
    state = trained.state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    torch.save({**state, key: torch.zeros(1, *state[key].shape[1:])}, tmp_path / "other.pt")
    expected = f"{key} has shape {(1, *state[key].shape[1:])} in the file and {tuple(state[key].shape)} in the model"
    with pytest.raises(UserError, match=re.escape(expected)):
        load_trained(fresh_model(), tmp_path / "other.pt")
    torch.save({k: v for k, v in state.items() if k != key}, tmp_path / "partial.pt")
    with pytest.raises(UserError, match=rf"1 of the model's keys are missing from the file \(first: \['{key}'\]\)"):
        load_trained(fresh_model(), tmp_path / "partial.pt")


def test_a_compact_model_as_the_start_is_compressed_further_its_budget_still_of_the_dense_model(dense, tmp_path):
    compact, _ = dense
    half = train(RunConfig.from_dict({**TINY, "macs_target": 0.5, "init": str(compact)}), tmp_path / "half")
    with pytest.raises(UserError, match=r"a compact model with \d+ channels removed, not a dense model"):
        read_state_dict(tmp_path / "half" / "compact.pt")  # not dense weights...
    start = str(tmp_path / "half" / "compact.pt")  # ... but a start to compress further
    quarter = train(RunConfig.from_dict({**TINY, "macs_target": 0.25, "init": start}), tmp_path / "quarter")
    assert quarter["dense_macs"] == half["dense_macs"]  # counted against the original dense model
    assert abs(quarter["macs"] / quarter["dense_macs"] - 0.25) < 0.03 < abs(half["macs"] / half["dense_macs"] - 0.25)
    model = load_compact(tmp_path / "quarter" / "compact.pt")  # one recipe, replayed on the dense model
    assert sum(p.numel() for p in model.parameters()) == quarter["params"]
    with pytest.raises(UserError, match=r"is a compact model at \d+\.\d% of the dense MACs: continuing it needs a "
                                        r"smaller macs_target \(got 0.6\)"):
        train(RunConfig.from_dict({**TINY, "macs_target": 0.6, "init": start}), tmp_path / "wider")


def test_a_trained_start_is_a_fine_tune_that_keeps_the_trained_scales_and_records_its_lineage(dense, tmp_path):
    compact, trained = dense
    config = RunConfig.from_dict({**{k: v for k, v in TINY.items() if k != "epochs"}, "sparsity": 0.5,
                                  "init": str(compact)})
    assert (config.train.epochs, config.train.lr, config.chex.explore_until) == (
        FINETUNE["epochs"], FINETUNE["lr"], FINETUNE["explore_until"])
    assert config.train.norm_init is None  # never erase the trained BatchNorm scales
    explicit = RunConfig.from_dict({**TINY, "lr": 0.05, "init": str(compact)})
    assert (explicit.train.epochs, explicit.train.lr) == (1, 0.05)  # what the settings give wins
    result = train(config, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["lineage"]["init_digest"] == file_digest(compact)
    assert saved["lineage"]["dataset"]["name"] == "synthetic"
    assert (saved["lineage"]["dataset"]["train_size"], saved["lineage"]["dataset"]["val_size"]) == (128, 64)
    assert result["macs"] < result["dense_macs"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["init"] == str(compact)


def test_the_dataset_digest_names_the_images_and_the_split(tmp_path):
    from chex_tune.train.data import load_data

    def digest(**changes):
        return load_data(RunConfig.from_dict({**TINY, **changes}).train).lineage()["digest"]

    assert digest() == digest()
    assert digest() != digest(train_subset=96)
    assert digest() != digest(val_size=32)


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp, dense: tmp / "nope.pt", "--init '{path}': no such file"),
    (lambda tmp, dense: dense[0], "its weights do not fit the model: "),
])
def test_bad_init_on_the_command_line_is_one_line_and_exit_2(dense, tmp_path, capsys, make, message):
    path = make(tmp_path, dense)
    code = main(["train", "--model", "resnet18", "--dataset", "synthetic", "--train-subset", "64", "--val-size", "32",
                 "--batch-size", "32",
                 "--init", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert message.format(path=path) in err


def test_distillation_needs_a_trained_start_and_leaves_the_teacher_untouched(dense, tmp_path):
    from chex_tune.train.loop import Trainer

    with pytest.raises(ValueError, match=r"distill 0.5 needs init: the teacher is the trained model"):
        RunConfig.from_dict({**TINY, "distill": 0.5})
    with pytest.raises(ValueError, match=r"distill must be in \[0.0, 1.0\], got 1.5"):
        RunConfig.from_dict({**TINY, "distill": 1.5, "init": str(dense[0])})
    config = RunConfig.from_dict({**TINY, "sparsity": 0.5, "init": str(dense[0]), "distill": 0.5})
    trainer = Trainer(config, tmp_path)
    before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())
    trainer.run()
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())  # running stats too
    assert_same_weights(trainer.teacher, dense[1])
    plain = Trainer(RunConfig.from_dict({**TINY, "sparsity": 0.5, "init": str(dense[0])}), tmp_path / "plain")
    images, labels = next(plain.data.train_batches(32, epoch=0, seed=0))
    torch.manual_seed(0)
    with torch.no_grad():  # the same student and batch: the distilled loss adds the teacher's term
        distilled = trainer.loss(images, labels)
        trainer.teacher = None
        assert not torch.isclose(distilled, trainer.loss(images, labels))
