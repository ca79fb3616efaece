"""ChexConfig: one validated set of CHEX settings."""

from __future__ import annotations

import pytest

from chex_tune import ChexConfig


def test_round_trip_through_a_dict():
    config = ChexConfig(sparsity=0.7, regrow_ratio=0.2, period=3, allocator="uniform", macs_target=0.3)
    assert ChexConfig.from_dict(config.to_dict()) == config
    assert config.budget == "macs" and ChexConfig().budget == "channels"


def test_old_allocator_names_mean_gamma():
    assert ChexConfig(allocator="gamma-channels").allocator == "gamma"
    assert ChexConfig(allocator="gamma-macs", macs_target=0.3).allocator == "gamma"


@pytest.mark.parametrize(("values", "message"), [
    ({"sparsty": 0.5}, "unknown CHEX setting(s) ['sparsty']"),
    ({"explore_until": 0.0}, "explore_until must be in (0.0, 1.0]"),
    ({"width_multiple": 0}, "width_multiple must be a positive integer"),
    ({"unit": "batch"}, "unknown unit 'batch'; choose one of: step, epoch"),
    ({"allocator": "gamma-macs"}, "allocator 'gamma-macs' needs macs_target"),
    ({"allocator": "magic"}, "unknown allocator 'magic'; choose one of: gamma, gamma-per-cost, gamma-normalized, "
                             "uniform"),
    ({"period": 1.5}, "period must be a positive integer"),
])
def test_bad_values_are_rejected_by_name(values, message):
    with pytest.raises(ValueError) as info:
        ChexConfig.from_dict(values)
    assert message in str(info.value)


def test_chex_config_lives_in_core_and_chex_tune_config_re_exports_it():
    from chex_tune import config
    from chex_tune.core import config as core_config

    assert config.ChexConfig is core_config.ChexConfig is ChexConfig
    assert config._is_int is core_config._is_int  # the validators TrainConfig shares
    with pytest.raises(ValueError, match=r"unknown scorer 'magic'; choose one of: css, l1"):
        core_config.ChexConfig(scorer="magic")  # registry names, looked up when a config is validated
