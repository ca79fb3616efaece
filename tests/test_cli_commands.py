"""The next-step lines the CLI prints (``chex-tune ui ...``) run as printed, on PATH or not."""

from __future__ import annotations

import pathlib
import shutil
import sysconfig
import types

import pytest

from chex_tune.cli import main
from chex_tune.cli._commands import command

SCRIPT = pathlib.Path(sysconfig.get_path("scripts")) / "chex-tune"  # this installation's console script
ROOT = SCRIPT.parent.parent.parent  # the folder holding the venv (the repository for scripts/main.sh's .venv)
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="chex-tune is not installed as a console script")


def off_path(monkeypatch, found=None):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: found if name == "chex-tune" else None)


def test_off_path_the_line_names_the_script_relative_to_the_working_folder(monkeypatch):
    off_path(monkeypatch)
    monkeypatch.chdir(ROOT)
    relative = SCRIPT.relative_to(ROOT)  # .venv/bin/chex-tune after scripts/main.sh
    assert command("ui", "--store", "mlflow") == f"{relative} ui --store mlflow"


def test_off_path_outside_the_venvs_folder_the_line_names_the_absolute_script(monkeypatch, tmp_path):
    off_path(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert command("pareto", "family") == f"{SCRIPT} pareto family"


def test_on_path_the_line_is_the_bare_command_and_arguments_are_quoted(monkeypatch):
    off_path(monkeypatch, found=str(SCRIPT))
    assert command("sweep", "my space.yaml", "--resume") == "chex-tune sweep 'my space.yaml' --resume"


def test_another_installations_chex_tune_on_path_is_not_named(monkeypatch, tmp_path):
    other = tmp_path / "chex-tune"
    other.write_text("#!/bin/sh\n")
    off_path(monkeypatch, found=str(other))
    monkeypatch.chdir(tmp_path)
    assert command("ui") == f"{SCRIPT} ui"


def test_sweep_prints_its_resume_and_browse_lines_runnable_off_path(monkeypatch, capsys, tmp_path):
    import chex_tune.tuning.sweep as sweep

    result = types.SimpleNamespace(interrupted=True, experiment="exp1", tracking_uri="sqlite:///x/mlflow.db")
    monkeypatch.setattr(sweep, "run_sweep", lambda space, options, log: result)
    off_path(monkeypatch)
    monkeypatch.chdir(ROOT)
    space = "search_spaces/fashion_mnist_resnet18.yaml"
    assert main(["sweep", space, "--store", str(tmp_path)]) == 130
    out = capsys.readouterr().out
    relative = SCRIPT.relative_to(ROOT)
    assert f"interrupted: continue with  {relative} sweep {space} --resume --experiment exp1" in out
    assert out.rstrip().endswith(f"browse the runs: {relative} ui --store {tmp_path}")


def test_family_prints_its_browse_line_runnable_off_path(monkeypatch, capsys, tmp_path):
    import chex_tune.tuning.family as family

    class Front:  # what run_family returns, as far as the command reads it
        interrupted = False

        def __str__(self) -> str:
            return "the front"

    monkeypatch.setattr(family, "run_family", lambda settings, **kwargs: Front())
    off_path(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["family", "--init", "dense.pt", "--store", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"browse: {SCRIPT} pareto family --store {tmp_path / 's'}")
