"""Pareto-ASHA's rule on synthetic curves with known fronts (the scheduler's own methods, no Ray cluster)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from chex_tune.tuning.pareto import crowding_distances, preference_order
from chex_tune.tuning.pareto_asha import ParetoAsha
from chex_tune.tuning.protocol import FINAL_KEY

CONTINUE, STOP = "CONTINUE", "STOP"


def report(scheduler: ParetoAsha, trial_id: str, epoch: int, **metrics) -> str:
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id), {"epoch": epoch, **metrics})


def test_rungs_sit_at_grace_times_powers_of_eta_below_max_t():
    assert ParetoAsha(grace=1, eta=3, max_t=9).milestones(100) == [1, 3]
    assert ParetoAsha(grace=2, eta=2, max_t=20).milestones(100) == [2, 4, 8, 16]
    assert ParetoAsha(grace=1, eta=3).milestones(30) == [1, 3, 9, 27]
    assert ParetoAsha(grace=1, eta=3, max_t=1).milestones(5) == []  # nothing to decide in a 1-epoch sweep


def test_dominated_trials_stop_at_the_first_rung_and_front_trials_continue():
    scheduler = ParetoAsha("val_acc:max,macs:min", grace=1, eta=2, max_t=4)
    assert report(scheduler, "accurate", 1, val_acc=0.90, macs=20.0) == CONTINUE  # alone at the rung
    assert report(scheduler, "cheap", 1, val_acc=0.70, macs=5.0) == CONTINUE  # keep 1 of 2, but tied: both ends
    assert report(scheduler, "dominated", 1, val_acc=0.60, macs=25.0) == STOP  # worse than both in both
    assert report(scheduler, "also dominated", 1, val_acc=0.65, macs=21.0) == STOP
    assert scheduler.stopped == {"dominated": 1, "also dominated": 1}
    assert scheduler.stopped_at("accurate") is None
    # the survivors are not re-judged at the same rung; at the next rung they meet each other
    assert report(scheduler, "accurate", 1, val_acc=0.91, macs=20.0) == CONTINUE
    assert report(scheduler, "accurate", 2, val_acc=0.92, macs=20.0) == CONTINUE
    assert report(scheduler, "cheap", 2, val_acc=0.50, macs=30.0) == STOP  # now dominated by "accurate"
    assert scheduler.stopped["cheap"] == 2


def test_inside_a_front_the_extremes_are_kept_before_the_crowded_middle():
    scheduler = ParetoAsha("val_acc:max,macs:min", grace=1, eta=3, max_t=9)
    # Five mutually non-dominated trials: one front. keep = ceil(5/3) = 2 -> the two extremes.
    front = {"a": (0.50, 1.0), "b": (0.60, 2.0), "c": (0.61, 2.1), "d": (0.62, 2.2), "e": (0.90, 9.0)}
    for trial_id, (acc, macs) in front.items():
        scheduler.rungs.setdefault(1, {})[trial_id] = (acc, macs)
    assert [t for t in front if scheduler.promotable(1, t)] == ["a", "e"]
    distances = crowding_distances(list(front.values()), [True, False])
    assert math.isinf(distances[0]) and math.isinf(distances[4]) and np.isfinite(distances[1:4]).all()


def test_directions_are_respected_min_min_and_max_max():
    minimise = ParetoAsha("val_loss:min,macs:min", grace=1, eta=2, max_t=4)
    assert report(minimise, "low loss", 1, val_loss=0.2, macs=10.0) == CONTINUE
    assert report(minimise, "high loss", 1, val_loss=0.9, macs=11.0) == STOP
    maximise = ParetoAsha("val_acc:max,sparsity:max", grace=1, eta=2, max_t=4)
    assert report(maximise, "sparse", 1, val_acc=0.8, sparsity=0.7) == CONTINUE
    assert report(maximise, "dense", 1, val_acc=0.7, sparsity=0.1) == STOP


def test_three_objectives_rank_by_non_dominated_sorting():
    scheduler = ParetoAsha("val_acc:max,macs:min,latency_ms:min", grace=1, eta=2, max_t=4)
    assert report(scheduler, "a", 1, val_acc=0.9, macs=10.0, latency_ms=5.0) == CONTINUE
    assert report(scheduler, "b", 1, val_acc=0.8, macs=5.0, latency_ms=9.0) == CONTINUE  # tied with a: both ends
    assert report(scheduler, "c", 1, val_acc=0.85, macs=20.0, latency_ms=6.0) == STOP  # dominated by a
    order = preference_order([[0.9, 10, 5], [0.8, 5, 9], [0.85, 20, 6]], [True, False, False])
    assert order[-1] == 2


def test_a_report_without_an_objective_or_the_final_report_is_never_a_rung():
    scheduler = ParetoAsha("val_acc:max,macs:min", grace=1, eta=2, max_t=4)
    assert report(scheduler, "a", 1, val_acc=0.9, macs=10.0) == CONTINUE
    assert report(scheduler, "no macs", 1, val_acc=0.1) == CONTINUE
    assert report(scheduler, "nan", 1, val_acc=math.nan, macs=1.0) == CONTINUE
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="no epoch"), {"val_acc": 0.1, "macs": 99.0}) \
        == CONTINUE
    assert report(scheduler, "final", 1, val_acc=0.1, macs=99.0, **{FINAL_KEY: True}) == CONTINUE
    assert set(scheduler.rungs[1]) == {"a"} and scheduler.stopped == {}


def test_a_trial_reporting_past_several_rungs_at_once_is_recorded_at_each():
    scheduler = ParetoAsha("val_acc:max,macs:min", grace=1, eta=2, max_t=16)
    assert report(scheduler, "a", 1, val_acc=0.9, macs=1.0) == CONTINUE
    assert report(scheduler, "b", 5, val_acc=0.5, macs=2.0) == STOP  # reaches rungs 1, 2 and 4 in one report
    assert set(scheduler.rungs) == {1, 2, 4} and all("b" in scheduler.rungs[m] for m in (1, 2, 4))
    assert scheduler.stopped == {"b": 5}


def test_rung_metrics_read_the_cost_from_another_reported_metric():
    scheduler = ParetoAsha("val_acc:max,macs:min", grace=1, eta=2, max_t=4, rung_metrics={"macs": "macs_budget"})
    assert report(scheduler, "a", 1, val_acc=0.9, macs=50.0, macs_budget=10.0) == CONTINUE
    assert report(scheduler, "b", 1, val_acc=0.8, macs=5.0, macs_budget=12.0) == STOP  # by budget, b is dominated
    assert report(scheduler, "c", 1, val_acc=0.95, macs=9.0) == CONTINUE  # no budget reported: its macs count
    assert scheduler.rungs[1]["c"] == (0.95, 9.0)
    with pytest.raises(ValueError, match=r"rung_metrics names \['latency_ms'\]"):
        ParetoAsha(rung_metrics={"latency_ms": "x"})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"grace": 0}, "grace must be a positive number of epochs, got 0"),
    ({"eta": 1}, r"eta must be an integer >= 2 \(keep the best 1/eta at each rung\), got 1"),
    ({"eta": 2.5}, "eta must be an integer >= 2"),
    ({"max_t": 0}, "max_t must be a positive number of epochs or None, got 0"),
    ({"objectives": "val_acc:up"}, "mode must be 'max' or 'min', got 'up'"),
])
def test_bad_settings_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ParetoAsha(**kwargs)
