"""Counts (MACs, parameters) as people write them: 740K, 33.4M, 1.8G. One suffix table for reading and writing,
so a number chex-tune prints can be typed back into ``--max-macs``, and a tiny model's 4,600 MACs read "4.6K"
rather than "0.00M"."""

from __future__ import annotations

import math

SUFFIXES = {"K": 1e3, "M": 1e6, "G": 1e9}


def format_count(value: float, spec: str = ".3g") -> str:
    """``value`` with the largest suffix that still shows a number >= 1, formatted with ``spec``: 33.4M, 740K,
    12. The choice is made on the number as shown, so 999,999 reads "1M", not "1e+03K"."""
    shown = f"{value:{spec}}"
    for suffix, scale in SUFFIXES.items():  # smallest first
        if abs(float(shown.rstrip("".join(SUFFIXES)))) < 1000:
            break
        shown = f"{value / scale:{spec}}{suffix}"
    return shown


def parse_count(text, what: str) -> float:
    """``2.5e6``, ``2500000`` or ``2.5M`` (suffixes K or k, M, G) as a positive number; ``what`` names the input
    in the error."""
    raw = str(text).strip()
    number, factor = (raw[:-1], SUFFIXES.get(raw[-1:].upper(), math.nan)) if raw[-1:].isalpha() else (raw, 1.0)
    try:
        value = float(number) * factor
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive number like 2.5e6 or 2.5M (suffixes K, M, G), got {text!r}")
    return value

