"""A trained start (``init``): the weight files a user may bring, the checks before any work, and the fine-tune."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from chex_tune import load_compact
from chex_tune.cli import main
from chex_tune.config import FINETUNE, RunConfig, preset_chex, start_preset
from chex_tune.core.errors import UserError
from chex_tune.train.loop import train
from chex_tune.train.weights import (
    file_digest,
    fit_to_weights,
    load_trained,
    read_state_dict,
    space_flag,
    weights_facts,
)

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
    half = train(RunConfig.from_dict({**TINY, "macs_target": 0.5, "init": str(compact)}, preset="finetune"),
                 tmp_path / "half")
    with pytest.raises(UserError, match=r"a compact model with \d+ channels removed, not a dense model"):
        read_state_dict(tmp_path / "half" / "compact.pt")  # not dense weights...
    start = str(tmp_path / "half" / "compact.pt")  # ... but a start to compress further
    quarter = train(RunConfig.from_dict({**TINY, "macs_target": 0.25, "init": start}, preset="finetune"),
                    tmp_path / "quarter")
    assert quarter.dense_macs == half.dense_macs  # counted against the original dense model
    assert abs(quarter.macs / quarter.dense_macs - 0.25) < 0.03 < abs(half.macs / half.dense_macs - 0.25)
    model = load_compact(tmp_path / "quarter" / "compact.pt")  # one recipe, replayed on the dense model
    assert sum(p.numel() for p in model.parameters()) == quarter.params
    with pytest.raises(UserError, match=r"is a compact model at \d+\.\d% of the dense MACs: continuing it needs a "
                                        r"smaller macs_target \(got 0.6\)"):
        train(RunConfig.from_dict({**TINY, "macs_target": 0.6, "init": start}, preset="finetune"), tmp_path / "wider")


def test_a_trained_start_is_a_fine_tune_that_keeps_the_trained_scales_and_records_its_lineage(dense, tmp_path):
    compact, trained = dense
    settings = {**{k: v for k, v in TINY.items() if k != "epochs"}, "sparsity": 0.5, "init": str(compact)}
    config = RunConfig.from_dict(settings, preset="finetune")  # what the CLI applies to a trained start
    assert (config.train.epochs, config.train.lr, config.chex.explore_until) == (
        FINETUNE["epochs"], FINETUNE["lr"], FINETUNE["explore_until"])
    assert config.train.norm_init is None  # never erase the trained BatchNorm scales
    assert start_preset(settings) == "finetune" and start_preset(TINY) is None
    assert RunConfig.from_dict(settings).train.lr == RunConfig().train.lr  # an init alone switches no default
    assert preset_chex("finetune") == {k: FINETUNE[k] for k in ("explore_until", "regrow_ratio", "allocator",
                                                                 "initial_scorer")}  # for a user's own loop
    explicit = RunConfig.from_dict({**TINY, "lr": 0.05, "init": str(compact)}, preset="finetune")
    assert (explicit.train.epochs, explicit.train.lr) == (1, 0.05)  # what the settings give wins
    with pytest.raises(ValueError, match=r"unknown preset 'fine-tune'; choose one of: finetune"):
        RunConfig.from_dict(settings, preset="fine-tune")
    result = train(config, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["lineage"]["init_digest"] == file_digest(compact)
    assert saved["lineage"]["dataset"]["name"] == "synthetic"
    assert (saved["lineage"]["dataset"]["train_size"], saved["lineage"]["dataset"]["val_size"]) == (128, 64)
    assert result.macs < result.dense_macs
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
        RunConfig.from_dict({**TINY, "distill": 0.5}).train.check_teacher()
    with pytest.raises(ValueError, match=r"distill must be in \[0.0, 1.0\], got 1.5"):
        RunConfig.from_dict({**TINY, "distill": 1.5, "init": str(dense[0])})
    config = RunConfig.from_dict({**TINY, "sparsity": 0.5, "init": str(dense[0]), "distill": 0.5}, preset="finetune")
    trainer = Trainer(config, tmp_path)
    teacher = trainer.loss.teacher  # the loss is chosen once: distillation from a frozen copy of the start
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    trainer.run()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # running stats too
    assert_same_weights(teacher, dense[1])
    plain = Trainer(RunConfig.from_dict({**TINY, "sparsity": 0.5, "init": str(dense[0])}, preset="finetune"),
                    tmp_path / "plain")
    assert not hasattr(plain.loss, "teacher")  # no distillation: plain cross-entropy
    images, labels = next(plain.data.train_batches(32, epoch=0, seed=0))
    with torch.no_grad():  # the same logits and batch: the distilled loss adds the teacher's term
        logits = trainer.model(images)
        assert not torch.isclose(trainer.loss(logits, images, labels), plain.loss(logits, images, labels))


# ------------------------------------------------------------------------------------ what the weights say
def saved(model, path):
    torch.save(model.state_dict(), path)
    return path


def timm_weights(path, name="resnet18", **kwargs):
    """An ordinary timm model's state_dict, as a user's own training loop saves it (timm's stem)."""
    import timm

    return saved(timm.create_model(name, **kwargs), path)


def test_the_weights_say_their_input_channels_classes_and_stem(dense, tmp_path):
    from chex_tune.train.models import create_model

    grey = weights_facts(timm_weights(tmp_path / "grey.pt", num_classes=10, in_chans=1), "resnet18")
    assert (grey.in_chans, grey.classes, grey.stem) == (1, 10, "timm")  # conv1 7x7: timm's stem
    assert grey.evidence == {"in_chans": "conv1.weight (64, 1, 7, 7)", "stem": "conv1.weight (64, 1, 7, 7)",
                             "classes": "fc.weight (10, 512)"}
    small = saved(create_model("resnet18", num_classes=7, in_chans=3, stem="small"), tmp_path / "small.pt")
    assert (weights_facts(small, "resnet18").in_chans, weights_facts(small, "resnet18").classes,
            weights_facts(small, "resnet18").stem) == (3, 7, "small")  # conv1 3x3 where timm's is 7x7
    # test_resnet's stem starts with a 3x3 conv either way: the weights cannot tell the stems apart
    deep = weights_facts(saved(fresh_model(), tmp_path / "deep.pt"), "test_resnet")
    assert (deep.in_chans, deep.classes, deep.stem) == (3, 10, None)
    recorded = weights_facts(dense[0], "resnet18")  # a chex-tune file: its recipe says, whatever the run's model
    assert (recorded.in_chans, recorded.classes, recorded.stem) == (3, 10, "timm")


def test_init_sets_the_settings_left_out_and_refuses_those_that_contradict_the_weights(tmp_path):
    path = timm_weights(tmp_path / "grey.pt", num_classes=10, in_chans=1)
    assert fit_to_weights({"model": "resnet18"}, path) == {"model": "resnet18", "in_chans": 1, "stem": "timm"}
    assert fit_to_weights({"model": "resnet18", "stem": "auto", "in_chans": None}, path) == {
        "model": "resnet18", "in_chans": 1, "stem": "timm"}  # "auto" and null leave the choice to the weights
    assert fit_to_weights({"model": "resnet18", "stem": "small"}, path, explicit=["model"])["stem"] == "timm"
    assert fit_to_weights({"model": "resnet18", "stem": "timm", "in_chans": 1}, path)["stem"] == "timm"
    with pytest.raises(UserError, match=re.escape(
            f"--init {path}: its weights were trained with the timm stem (conv1.weight (64, 1, 7, 7)) and this run "
            "sets stem small; pass --stem timm, or leave stem out and --init sets it")):
        fit_to_weights({"model": "resnet18", "stem": "small"}, path)
    with pytest.raises(UserError, match=re.escape(
            f"--init {path}: its weights take 1 input channel (conv1.weight (64, 1, 7, 7)) and this run sets "
            "in_chans 3; pass --set in_chans=1, or leave in_chans out and --init sets it")):
        fit_to_weights({"model": "resnet18", "in_chans": 3}, path)
    with pytest.raises(UserError, match=re.escape("pass 'in_chans: 1' under the space's fixed, or leave")):
        fit_to_weights({"model": "resnet18", "in_chans": 3}, path, flag=space_flag)


def test_weights_whose_classes_or_channels_differ_from_the_run_are_refused_before_training(tmp_path):
    path = timm_weights(tmp_path / "five.pt", "test_resnet", num_classes=5)
    with pytest.raises(UserError, match=re.escape(
            f"--init {path}: its weights classify 5 classes (fc.weight (5, 96)) and dataset synthetic has 10; give "
            "the dataset they were trained on (--dataset, --data-dir)")):
        train(RunConfig.from_dict({**TINY, "init": str(path)}), tmp_path / "out")
    grey = timm_weights(tmp_path / "grey.pt", "test_resnet", num_classes=10, in_chans=1)
    with pytest.raises(UserError, match=re.escape("this run sets in_chans 3; pass --set in_chans=1")):
        train(RunConfig.from_dict({**TINY, "init": str(grey)}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_grey_dataset_feeds_a_3_channel_model_and_a_colour_one_a_1_channel_model():
    from chex_tune.train.data import Data, TensorSplit

    def data(images, in_chans, mean, std):
        split = TensorSplit(images, torch.arange(len(images)) % 10, "cpu")
        made = Data(name="own", num_classes=10, mean=mean, std=std, train=split, val=split, test=split, device="cpu")
        made.feed_channels(in_chans)
        return made

    grey = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    as_is, as_colour = data(grey, None, (0.3,), (0.4,)), data(grey, 3, (0.3,), (0.4,))
    assert (as_is.in_chans, as_colour.in_chans, as_colour.own_chans) == (1, 3, 1)
    fed = as_colour.example_input()
    assert fed.shape == (2, 3, 8, 8) and fed.is_contiguous()
    assert all(torch.equal(fed[:, c:c + 1], as_is.example_input()) for c in range(3))  # the channel, repeated
    colour = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    stats = ((0.2, 0.4, 0.6), (0.3, 0.2, 0.1))
    averaged = data(colour, 1, *stats).example_input()
    assert averaged.shape == (2, 1, 8, 8)
    assert torch.allclose(averaged, data(colour, None, *stats).example_input().mean(1, keepdim=True))
    with pytest.raises(ValueError, match=re.escape("in_chans 2 does not fit dataset own's 3-channel images: give 3 "
                                                   "(its own) or 1 (its channels averaged)")):
        data(colour, 2, *stats)


def test_ordinary_timm_weights_train_with_no_flag_beyond_init(tmp_path, capsys):
    path = timm_weights(tmp_path / "grey.pt", num_classes=10, in_chans=1)
    code = main(["train", "--model", "resnet18", "--dataset", "synthetic", "--train-subset", "64", "--val-size", "32",
                 "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--init", str(path),
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert (config["in_chans"], config["stem"], config["init"]) == (1, "timm", str(path))
    assert load_compact(tmp_path / "out" / "compact.pt")(torch.zeros(1, 1, 16, 16)).shape == (1, 10)
