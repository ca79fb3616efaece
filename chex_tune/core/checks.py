"""The checks every settings dataclass runs on its values, each naming the value and what is allowed."""

from __future__ import annotations

import math


def parse_latency_target(value) -> tuple[float | None, float | None]:
    """``latency_target`` as (fraction of the dense latency, None) or (None, milliseconds: text such as "4ms")."""
    if isinstance(value, str):
        return None, parse_milliseconds(value, "latency_target must be a fraction of the dense latency in (0, 1] or "
                                               "milliseconds such as '4ms'", unit=True)
    _in_range("latency_target", value, 0.0, 1.0, closed_high=True, open_low=True)
    return float(value), None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(name, value, low, high, *, closed_high, open_low=False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (low < value if open_low else low <= value) and (value <= high if closed_high else value < high)
    if not ok:
        allowed = f"{'(' if open_low else '['}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")


def _one_of(name, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def parse_milliseconds(text, what: str, *, unit: bool = False) -> float:
    """``2.5``, ``2.5ms`` or ``2.5 ms`` as a positive, finite number of milliseconds; with ``unit`` the "ms" is
    required (a bare number means something else there). ``what`` starts the error: "X must be ...", then the value."""
    raw = str(text).strip().lower()
    number = raw.removesuffix("ms").strip()
    try:
        value = float(number) if raw.endswith("ms") or not unit else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what}, got {text!r}")
    return value
