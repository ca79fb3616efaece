"""Counts as people write them: one suffix table for printing and parsing."""

from __future__ import annotations

import pytest

from chex_tune.core.checks import parse_milliseconds
from chex_tune.units import format_count, parse_count


def test_counts_take_the_largest_suffix_they_reach():
    assert [format_count(v) for v in (12, 4_600, 740_000, 33_400_000, 1.8e9)] == ["12", "4.6K", "740K", "33.4M", "1.8G"]
    assert format_count(1e6, ".2f") == "1.00M" and format_count(4_600, ".2f") == "4.60K"  # a tiny model is not 0.00M


def test_a_count_that_rounds_up_to_1000_takes_the_next_suffix():
    assert format_count(999_999) == "1M" and format_count(999_996, ".2f") == "1.00M" and format_count(999) == "999"
    assert format_count(5e12) == "5e+03G"  # nothing above G


def test_a_printed_count_parses_back():
    for value in (4_600, 740_000, 33_400_000, 1.8e9):
        assert parse_count(format_count(value), "x") == pytest.approx(value)


def test_counts_parse_with_or_without_a_suffix():
    assert parse_count("2.5e6", "x") == parse_count("2.5M", "x") == parse_count("2500000", "x") == 2.5e6
    assert parse_count("300k", "x") == parse_count("300K", "x") == 3e5 and parse_count(" 1.5G ", "x") == 1.5e9
    for bad in ("", "M", "-1M", "0", "2.5Q", "nan", "inf"):
        with pytest.raises(ValueError, match=rf"--max-macs must be a positive number .* got {bad!r}"):
            parse_count(bad, "--max-macs")


@pytest.mark.parametrize(("text", "unit", "value"), [("2.5", False, 2.5), ("2.5ms", False, 2.5), (" 4 MS ", True, 4.0),
                                                     (3, False, 3.0)])
def test_milliseconds_read_with_or_without_their_unit(text, unit, value):
    assert parse_milliseconds(text, "x must be milliseconds", unit=unit) == value


@pytest.mark.parametrize(("text", "unit"), [("0.5", True), ("-1ms", False), ("0", False), ("fast", False),
                                            ("infms", False), ("2.5M", False)])
def test_bad_milliseconds_are_named_in_the_error(text, unit):
    with pytest.raises(ValueError, match=rf"^x must be milliseconds, got {text!r}$"):
        parse_milliseconds(text, "x must be milliseconds", unit=unit)
