"""ChexConfig: one validated set of CHEX settings."""

from __future__ import annotations

import pytest

from chex_tune import ChexConfig


def test_round_trip_through_a_dict():
    config = ChexConfig(sparsity=0.7, regrow_ratio=0.2, period=3, allocator="gamma-macs", macs_target=0.3)
    assert ChexConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("values", "message"), [
    ({"sparsty": 0.5}, "unknown CHEX setting(s) ['sparsty']"),
    ({"explore_until": 0.0}, "explore_until must be in (0.0, 1.0]"),
    ({"width_multiple": 0}, "width_multiple must be a positive integer"),
    ({"unit": "batch"}, "unknown unit 'batch'; choose one of: step, epoch"),
    ({"allocator": "gamma-channels", "macs_target": 0.5}, "use allocator 'gamma-macs'"),
    ({"period": 1.5}, "period must be a positive integer"),
])
def test_bad_values_are_rejected_by_name(values, message):
    with pytest.raises(ValueError) as info:
        ChexConfig.from_dict(values)
    assert message in str(info.value)
