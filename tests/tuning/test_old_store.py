"""A store written before the tuning-layer redesign is still read by ``pareto`` and ``export``.

``tests/fixtures/old_store.tar.gz`` was written by chex-tune at commit 4bcdf12 (``tests/fixtures/make_old_store.py``
says how): experiment ``builtin`` (the built-in trainable, two trials with ``config.yaml``) and experiment ``user``
(a user's ChexReporter trainable, two trials with ``chex.yaml``, objectives ``val_loss:min,macs:min``).
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import tarfile

import pytest

from chex_tune import load_compact
from chex_tune.cli import main

FIXTURE = pathlib.Path(__file__).parents[1] / "fixtures" / "old_store.tar.gz"
WRITTEN_AT = "/tmp/oldstore/store"  # where the store was written: its runs' artifact locations name it


@pytest.fixture(scope="module")
def old_store(tmp_path_factory) -> pathlib.Path:
    """The store unpacked, its absolute artifact locations moved to where it now is (as after moving a store)."""
    store = tmp_path_factory.mktemp("old") / "store"
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(store, filter="data")
    with sqlite3.connect(store / "mlflow.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = db.execute(f'PRAGMA table_info("{table}")').fetchall()
            for column in [name for _, name, kind, *_ in columns if kind == "TEXT" or kind.startswith("VARCHAR")]:
                db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE "{column}" LIKE ?',
                           (WRITTEN_AT, str(store), f"%{WRITTEN_AT}%"))
    return store


def pareto_json(store, capsys, *args) -> dict:
    assert main(["pareto", *args, "--store", str(store), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_pareto_reads_an_old_builtin_sweep_and_an_old_user_sweep(old_store, capsys):
    builtin = pareto_json(old_store, capsys, "builtin")
    assert builtin["finished"] == 2 and builtin["objectives"] == ["val_acc:max", "macs:min"]
    assert 1 <= len(builtin["front"]) <= 2
    assert all(row["macs"] > 0 and 0 <= row["val_acc"] <= 1 for row in builtin["front"])
    user = pareto_json(old_store, capsys, "user", "--objectives", "val_loss:min,macs:min")
    assert user["finished"] == 2 and all("val_loss" in row for row in user["front"])


def test_export_writes_and_scores_a_model_of_an_old_builtin_sweep(old_store, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "builtin", "--store", str(old_store), "--min-acc", "0.01", "--format", "state",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation accuracy of the written file" in printed
    model = load_compact(out)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_export_writes_an_old_user_trial_through_its_builder(old_store, tmp_path, capsys):
    front = pareto_json(old_store, capsys, "user", "--objectives", "val_loss:min,macs:min")["front"]
    out = tmp_path / "user.onnx"
    assert main(["export", "user", "--store", str(old_store), "--run", front[0]["run_id"], "--format", "onnx",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "not evaluated" in printed  # no dataset of the user's: said, not guessed
    assert out.stat().st_size > 0
