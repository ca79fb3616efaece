"""The chex-tune command line."""

from __future__ import annotations

import pytest

from chex_tune.cli import main


def test_inspect_lists_groups_and_costs(capsys):
    assert main(["inspect", "resnet18", "--size", "32", "--num-classes", "10", "--sparsity", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "resnet18 at 32px: 12 channel groups, 12 prunable" in out
    assert "layer1.0.conv1" in out and "MACs" in out


def test_inspect_suggests_close_names_for_unknown_models(capsys):
    assert main(["inspect", "resnet_18"]) == 2
    err = capsys.readouterr().err
    assert "unknown timm model 'resnet_18'" in err and "resnet18" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and "chex-tune 0.1.0" in capsys.readouterr().out


TRAIN = ["train", "--model", "test_resnet", "--dataset", "synthetic", "--stem", "timm", "--epochs", "1",
         "--batch-size", "32", "--train-subset", "128", "--val-size", "64", "--device", "cpu"]


def test_train_writes_the_run_and_prints_a_summary(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("sparsity: 0.3\nlr: 0.02\nregrow_ratio: 0.1\n")
    assert main([*TRAIN, "--config", str(config), "--sparsity", "0.5", "--set", "scorer=l1",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "test accuracy" in out and "fewer)" in out
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["sparsity"], saved["lr"], saved["scorer"], saved["regrow_ratio"]) == (0.5, 0.02, "l1", 0.1)
    assert (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "compact.pt").exists()


def test_train_with_a_macs_budget_uses_the_macs_allocator(tmp_path):
    from chex_tune.cli import build_parser
    from chex_tune.cli.train_cmd import resolve_config

    args = build_parser().parse_args([*TRAIN, "--budget", "macs", "--macs-target", "0.3", "--out", str(tmp_path)])
    config = resolve_config(args)
    assert (config.chex.allocator, config.chex.macs_target) == ("gamma", 0.3)
    args = build_parser().parse_args([*TRAIN, "--budget", "macs", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--budget macs needs --macs-target"):
        resolve_config(args)


@pytest.mark.parametrize(("flags", "message"), [
    (["--model", "resnet81"], "unknown timm model 'resnet81'; closest names:"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "4096"], "batch_size 4096 is larger than the training set"),
    (["--set", "sparsty=0.5"], "unknown setting(s) 'sparsty' (did you mean 'sparsity'?)"),
])
def test_train_bad_input_is_one_clear_line(tmp_path, capsys, flags, message):
    assert main([*TRAIN, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_names_where_fashion_mnist_was_looked_for(tmp_path, capsys):
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "apt-get install dataset-fashion-mnist" in err


@pytest.mark.parametrize("argv", [["sweep", "nope.yaml"], ["train", "--config", "nope.yaml", "--out", "x"]])
def test_a_missing_file_is_one_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
