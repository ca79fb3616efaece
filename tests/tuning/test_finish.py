"""Every trial ends through one finisher: what it sends, where, what it keeps for a replay, and what it refuses."""

from __future__ import annotations

import json
import math

import pytest

from chex_tune.tuning import finish
from chex_tune.tuning.finish import FINAL_REPORT, TrialEnd, finish_trial
from chex_tune.tuning.protocol import FINAL_KEY, PARAMS_KEY


def test_the_final_report_is_sent_once_and_kept_in_the_trials_metrics(tmp_path, monkeypatch):
    sent = []
    monkeypatch.setattr(finish, "report", lambda metrics, files=None: sent.append((metrics, files)))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_acc": 0.8, "history": [{"epoch": 1}]}))
    end = TrialEnd({"val_acc": 0.8, "macs": 1e6, "macs_ratio": math.nan}, {"host": "h"}, tmp_path)
    final = finish_trial(end)  # a model without MACs has a NaN ratio: no failure
    assert sent == [(final, tmp_path)]
    assert final[FINAL_KEY] is True and final[PARAMS_KEY] == {"host": "h"} and final["val_acc"] == 0.8
    kept = json.loads((tmp_path / "metrics.json").read_text())
    assert kept["history"] == [{"epoch": 1}] and kept[FINAL_REPORT]["macs"] == 1e6  # what a replay sends again
    assert TrialEnd.of_report(kept[FINAL_REPORT], tmp_path).params == {"host": "h"}


def test_a_sink_takes_the_end_instead_of_ray_and_non_finite_metrics_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(finish, "report", lambda *args: pytest.fail("reported to Ray"))
    taken = []
    finish_trial(TrialEnd({"val_acc": 0.5}), sink=taken.append)
    assert [end.metrics for end in taken] == [{"val_acc": 0.5}]
    with pytest.raises(FloatingPointError, match=r"non-finite final metric\(s\) \['val_acc'\]"):
        finish_trial(TrialEnd({"val_acc": math.nan}), sink=taken.append)
    assert len(taken) == 1
