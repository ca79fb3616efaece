"""Stores written by earlier releases are still read by ``pareto`` and ``export``.

Each archive under ``tests/fixtures`` (``make_old_store.py`` says how they were made) holds experiment ``builtin``
(the built-in trainable, two trials with ``config.yaml``) and experiment ``user`` (a user's ChexReporter trainable,
two trials with ``chex.yaml``, objectives ``val_loss:min,macs:min``): ``old_store.tar.gz`` from commit 4bcdf12,
before the tuning-layer redesign, and ``store_d04fd99.tar.gz`` from before one run result and one trial finisher.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import tarfile

import pytest

from chex_tune import load_compact
from chex_tune.cli import main

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
WRITTEN_AT = "/tmp/oldstore/store"  # where the stores were written: their runs' artifact locations name it


@pytest.fixture(scope="module", params=["old_store.tar.gz", "store_d04fd99.tar.gz"])
def old_store(tmp_path_factory, request) -> pathlib.Path:
    """The store unpacked, its absolute artifact locations moved to where it now is (as after moving a store)."""
    store = tmp_path_factory.mktemp("old") / "store"
    with tarfile.open(FIXTURES / request.param) as archive:
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


def test_an_old_runs_metrics_read_back_as_a_run_result(old_store):
    from chex_tune.train.result import RunResult

    records = [json.loads(path.read_text()) for path in (old_store / "artifacts").rglob("metrics.json")
               if "stem" in json.loads(path.read_text())]  # the built-in trainable's runs
    assert len(records) == 2
    for record in records:
        result = RunResult.from_record(record)
        assert result.val_acc == record["val_acc"] and result.macs_ratio == pytest.approx(record["macs_ratio"])
        assert result.latency.latency_ms == record["latency_ms"] and not result.latency.predicted
        assert result.final_metrics()["latency_spread"] == record["latency"]["spread"]
