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
