from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from chex_tune.core.schedule import ExploreSchedule


def test_stop_rounds_the_exploration_fraction() -> None:
    assert ExploreSchedule(period=2, total=10, explore_until=0.72).stop == 7  # 0.72 * 10 = 7.2
    assert ExploreSchedule(period=2, total=10, explore_until=0.75).stop == 8  # 7.5 rounds to even
    assert ExploreSchedule(period=3, total=100, explore_until=1.0).stop == 100
    assert ExploreSchedule(period=1, total=1, explore_until=0.4).stop == 0


def test_regrow_factor_follows_a_cosine_from_ratio_to_zero() -> None:
    schedule = ExploreSchedule(period=5, total=100, explore_until=0.5)  # stop = 50
    assert schedule.regrow_factor(0, 0.3) == pytest.approx(0.3)
    assert schedule.regrow_factor(25, 0.3) == pytest.approx(0.15)
    assert schedule.regrow_factor(10, 0.3) == pytest.approx(0.15 * (1 + math.cos(math.pi / 5)))
    assert schedule.regrow_factor(50, 0.3) == 0.0
    assert schedule.regrow_factor(51, 0.3) == 0.0
    assert schedule.regrow_factor(1000, 0.3) == 0.0
    assert schedule.regrow_factor(20, 0.0) == 0.0


def test_regrow_factor_decreases_until_stop() -> None:
    schedule = ExploreSchedule(period=1, total=40, explore_until=0.72)
    factors = [schedule.regrow_factor(t, 0.5) for t in range(schedule.stop + 1)]
    assert all(a > b for a, b in itertools.pairwise(factors))


def test_regrow_factor_is_zero_when_nothing_explores() -> None:
    schedule = ExploreSchedule(period=1, total=1, explore_until=0.4)
    assert schedule.regrow_factor(0, 0.3) == 0.0


@pytest.mark.parametrize(
    ("t", "ratio", "name"), [(-1, 0.3, "t"), (3, -0.1, "regrow_ratio"), (3, 1.5, "regrow_ratio")]
)
def test_regrow_factor_rejects_bad_arguments(t: int, ratio: float, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must .*got {t if name == 't' else ratio}"):
        ExploreSchedule(period=2, total=10, explore_until=0.72).regrow_factor(t, ratio)


def test_is_explore_step_boundaries() -> None:
    schedule = ExploreSchedule(period=2, total=10, explore_until=0.72)  # stop = 7, not a multiple of 2
    assert not schedule.is_explore_step(0)
    assert not schedule.is_explore_step(1)
    assert schedule.is_explore_step(2)
    assert not schedule.is_explore_step(3)
    assert schedule.is_explore_step(6)
    assert schedule.is_explore_step(7)
    assert not schedule.is_explore_step(8)
    assert not schedule.is_explore_step(7 + 2)
    assert not schedule.is_explore_step(-2)


@pytest.mark.parametrize(
    ("period", "total", "explore_until", "steps"),
    [
        (2, 10, 0.72, [2, 4, 6, 7]),
        (7, 10, 0.72, [7]),
        (1, 5, 0.6, [1, 2, 3]),
        (10, 10, 0.72, [7]),
        (3, 12, 1.0, [3, 6, 9, 12]),
        (1, 1, 0.4, []),
    ],
)
def test_explore_steps(period: int, total: int, explore_until: float, steps: list[int]) -> None:
    schedule = ExploreSchedule(period=period, total=total, explore_until=explore_until)
    assert schedule.explore_steps() == steps
    assert steps == [t for t in range(total + period + 1) if schedule.is_explore_step(t)]
    if steps:
        assert schedule.regrow_factor(steps[-1], 0.3) == 0.0  # the last exploration is a pure prune
        assert all(schedule.regrow_factor(t, 0.3) > 0.0 for t in steps[:-1])


def test_is_frozen_from_stop_on() -> None:
    schedule = ExploreSchedule(period=2, total=10, explore_until=0.72)
    assert [schedule.is_frozen(t) for t in (0, 6, 7, 8, 10)] == [False, False, True, True, True]


def test_schedule_is_immutable() -> None:
    schedule = ExploreSchedule(period=2, total=10, explore_until=0.72)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.period = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"period": 0, "total": 10},
            r"period must be a positive integer \(steps or epochs between .*\), got 0$",
        ),
        ({"period": -3, "total": 10}, r"^period must be a positive integer .*got -3$"),
        ({"period": 1.5, "total": 10}, r"^period must be a positive integer .*got 1.5$"),
        ({"period": True, "total": 10}, r"^period must be a positive integer .*got True$"),
        ({"period": 2, "total": 0}, r"^total must be a positive integer .*got 0$"),
        ({"period": 2, "total": 10, "explore_until": 0.0}, r"^explore_until must be in \(0, 1\] .*got 0.0$"),
        ({"period": 2, "total": 10, "explore_until": 1.2}, r"^explore_until must be in \(0, 1\] .*got 1.2$"),
    ],
)
def test_validation_names_argument_value_and_range(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExploreSchedule(**{"explore_until": 0.72, **kwargs})
