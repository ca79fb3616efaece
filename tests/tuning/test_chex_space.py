"""ChexSpace: the CHEX parameters as Ray Tune distributions and Optuna suggestions, read back as settings."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from chex_tune.config import ChexConfig
from chex_tune.tuning.protocol import FIXED_KEY, SEARCHED_KEY
from chex_tune.tuning.settings import resolve_chex_settings, trial_params
from chex_tune.tuning.space import ChexSpace, merge_spaces


def test_regrow_is_sampled_as_a_fraction_of_sparsity_so_no_corner_is_rejected():
    space = ChexSpace(sparsity=(0.1, 0.9), regrow_fraction=(0.0, 1.0), period=(1, 4))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        config = space.suggest(study.ask())
        settings = resolve_chex_settings(config)
        assert settings.regrow_ratio == pytest.approx(config["regrow_fraction"] * config["sparsity"])
        assert settings.regrow_ratio <= settings.sparsity and 1 <= settings.period <= 4


def test_ray_entries_are_distributions_plus_the_two_constants():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = ChexSpace(sparsity=(0.3, 0.7), period=(2, 6), scorer=["css", "l1"], fixed={"explore_until": 0.6})
    entries = space.ray()
    assert isinstance(entries["sparsity"], Float) and isinstance(entries["period"], Integer)
    assert isinstance(entries["scorer"], Categorical) and entries["scorer"].categories == ["css", "l1"]
    assert (entries["period"].lower, entries["period"].upper) == (2, 7)  # Ray's upper bound is exclusive
    assert entries[FIXED_KEY] == {"explore_until": 0.6}
    assert entries[SEARCHED_KEY] == ["period", "regrow_fraction", "scorer", "sparsity"]
    config = {"sparsity": 0.5, "regrow_fraction": 0.5, "period": 3, "scorer": "l1", "seed": 7, "lr": 0.1,
              FIXED_KEY: entries[FIXED_KEY], SEARCHED_KEY: entries[SEARCHED_KEY]}
    settings = resolve_chex_settings(config)  # the user's own seed and lr are not CHEX settings
    assert (settings.scorer, settings.explore_until, settings.seed, settings.regrow_ratio) == ("l1", 0.6, 0, 0.25)
    params = trial_params(config)
    assert params["lr"] == 0.1 and params["seed"] == 7 and params["chex.seed"] == 0  # the user's keeps its name
    assert {f.name for f in dataclasses.fields(ChexConfig)} - {"seed"} <= set(params)


def test_a_macs_budget_replaces_sparsity_and_needs_no_allocator_name():
    space = ChexSpace(macs_target=(0.2, 0.6))
    # the budget is macs_target (ChexSpace returns a SearchSpace, which has no `budget`: read it off the settings)
    assert "macs_target" in space.searched and "sparsity" not in space.searched and "sparsity" not in space.fixed
    settings = resolve_chex_settings({"macs_target": 0.25, "regrow_fraction": 1.0, "period": 2})
    assert settings.macs_target == 0.25 and settings.regrow_ratio == pytest.approx(0.5)  # 1 - sqrt(0.25)


@pytest.mark.parametrize("kwargs", [{"regrow_ratio": 0.1}, {"fixed": {"regrow_ratio": 0.1}}])
def test_a_users_regrow_ratio_replaces_the_default_regrow_fraction(kwargs):
    space = ChexSpace(macs_target=(0.2, 0.5), **kwargs)  # the default regrow_fraction is not the user's: no clash
    assert "regrow_fraction" not in space.searched and "regrow_fraction" not in space.fixed
    assert space.fixed["regrow_ratio"] == 0.1
    assert resolve_chex_settings({**space.fixed, "macs_target": 0.3, "period": 2}).regrow_ratio == 0.1


def test_a_regrow_ratio_range_is_searched_as_is():
    space = ChexSpace(sparsity=(0.4, 0.8), regrow_ratio=(0.0, 0.3))
    assert set(space.searched) == {"sparsity", "regrow_ratio", "period"}
    assert (space.params["regrow_ratio"].low, space.params["regrow_ratio"].high) == (0.0, 0.3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsity": (0.8, 0.3)}, r"sparsity: low \(0\.8\) must be below high \(0\.3\)"),
    ({"sparsity": (0.3, 1.0)}, r"\(sparsity=1\.0, .*\): sparsity must be in \[0\.0, 1\.0\), got 1\.0"),
    ({"sparsity": None}, r"exactly one budget"),
    ({"sparsity": 0.5, "macs_target": 0.3}, r"exactly one budget"),
    ({"period": (0, 5)}, r"ChexSpace period must be a positive integer or an integer range .*, got \(0, 5\)"),
    ({"scorer": ["css", "magic"]}, r"scorer='magic'\): unknown scorer 'magic'; choose one of: css, l1"),
    ({"fixed": {"sparsty": 0.5}}, r"fixed: unknown CHEX setting\(s\) \['sparsty'\]"),
    ({"regrow_ratio": 0.1, "regrow_fraction": 0.5}, r"ChexSpace: give regrow_ratio=0\.1 or regrow_fraction=0\.5, "
                                                     r"not both"),
    ({"fixed": {"regrow_ratio": 0.1}, "regrow_fraction": (0.0, 0.6)},
     r"give fixed=\{'regrow_ratio': 0\.1\} or regrow_fraction=\(0\.0, 0\.6\), not both"),
    ({"sparsity": (0.3, 0.8), "macs_target": (0.2, 0.5)},
     r"exactly one budget: .*got sparsity=\(0\.3, 0\.8\) and macs_target=\(0\.2, 0\.5\)"),
    ({"fixed": {"unit": "hour"}}, r"sampled configuration would be invalid .*: unknown unit 'hour'; "
                                  r"choose one of: step"),
])
def test_bad_spaces_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChexSpace(**kwargs)


def test_a_users_key_that_collides_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"search space key\(s\) \['period'\] are in two of the merged spaces"):
        merge_spaces({"lr": 0.1, "period": 3}, ChexSpace().ray())
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("sparsity", 0.0, 1.0)  # the user's own parameter of that name
    with pytest.raises(ValueError, match=r"already has parameter\(s\) \['sparsity'\]"):
        ChexSpace().suggest(trial)


def test_unknown_settings_in_a_plain_dict_are_rejected_by_name():
    with pytest.raises(ValueError, match=r"\['lr'\] are not CHEX settings \(allowed: .*sparsity"):
        resolve_chex_settings({"sparsity": 0.5, "lr": 0.1})
    with pytest.raises(ValueError, match=r"lacks the searched setting\(s\) \['sparsity'\]"):
        resolve_chex_settings({SEARCHED_KEY: ["sparsity"], FIXED_KEY: {}})
