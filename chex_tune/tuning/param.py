"""One searched setting: a range (``low``..``high``, optionally log-scaled or integer) or a list of ``choices``.

A ``Param`` checks its own form, knows the values that bound what it can sample (``corners``, for checking a
space before any trial runs), and turns itself into a Ray Tune domain, an Optuna distribution or an Optuna
suggestion: each conversion written once, here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# Numeric settings a space may search with a range (or with numeric choices), and their type.
NUMERIC = {"sparsity": float, "regrow_ratio": float, "regrow_fraction": float, "period": int, "explore_until": float,
           "lr": float, "macs_target": float, "latency_target": float, "distill": float, "distill_temperature": float}
# Categorical settings: searched with choices only.
CATEGORICAL = ("scorer", "initial_scorer", "sampler", "allocator", "reallocate")
SEARCHABLE = (*NUMERIC, *CATEGORICAL)
SPEC_KEYS = ("low", "high", "log", "int", "choices")


def check_mapping(value, allowed, expected: str, unknown_keys: str) -> None:
    """``value`` is a mapping whose keys are all ``allowed``; otherwise a ValueError starting with ``expected`` or
    ``unknown_keys`` (the YAML reader's one check of a section's form)."""
    if not isinstance(value, dict):
        raise ValueError(f"{expected}, got {value!r}")
    unknown = sorted(set(value) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"{unknown_keys} {unknown}; allowed: {', '.join(allowed)}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def __post_init__(self) -> None:
        has_range = self.low is not None or self.high is not None
        if self.choices is not None:
            if has_range:
                raise ValueError(f"{self.name}: give either low/high or choices, not both")
            self._check_choices()
        elif not has_range:
            raise ValueError(f"{self.name}: needs low and high (a range) or choices (a list)")
        else:
            self._check_range()

    @classmethod
    def from_spec(cls, name, spec) -> Param:
        """A YAML entry (``{low: 0.3, high: 0.8}``, ``{choices: [css, l1]}``) for setting ``name``, checked against
        the setting's type."""
        if not isinstance(name, str):
            raise ValueError(f"setting names are text, got {name!r}")
        check_mapping(spec, SPEC_KEYS, f"{name}: expected a mapping like {{low: 0.3, high: 0.8}} or "
                      "{choices: [a, b]}", f"{name}: unknown key(s)")
        choices = spec.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise ValueError(f"{name}: choices must be a list, got {choices!r}")
        if spec.get("int") is True and NUMERIC.get(name) is float:  # before the bounds check: the real mistake
            cls(name, 0, 1, integer=True).fitted()
        return cls(name, low=spec.get("low"), high=spec.get("high"), log=spec.get("log", False),
                   integer=spec.get("int", False), choices=None if choices is None else tuple(choices))

    def _check_range(self) -> None:
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is None:
                raise ValueError(f"{self.name}: a range needs both low and high")
            if not is_number(value):
                hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if _reads_as_number(value) else ""
                raise ValueError(f"{self.name}: {key} must be a number, got {value!r}{hint}")
        if not isinstance(self.log, bool) or not isinstance(self.integer, bool):
            raise ValueError(f"{self.name}: log and int must be true or false")
        if self.integer:
            if not all(float(v).is_integer() for v in (self.low, self.high)):
                raise ValueError(f"{self.name}: int: true needs integer bounds, got low={self.low}, high={self.high}")
            object.__setattr__(self, "low", int(self.low))  # 4.0 from YAML is the integer 4
            object.__setattr__(self, "high", int(self.high))
        if self.low > self.high:
            raise ValueError(f"{self.name}: low ({self.low}) must be below high ({self.high})")
        if self.low == self.high:
            raise ValueError(f"{self.name}: low == high ({self.low}) searches nothing; fix it under `fixed` instead")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: log: true needs positive bounds, got low={self.low}")

    def _check_choices(self) -> None:
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))
        if not isinstance(self.choices, tuple):
            raise ValueError(f"{self.name}: choices must be a list, got {self.choices!r}")
        if self.log or self.integer:
            raise ValueError(f"{self.name}: log and int apply to low/high ranges, not to choices")
        bad = [c for c in self.choices if c is not None and not isinstance(c, (str, bool, int, float))]
        if bad:
            raise ValueError(f"{self.name}: choices must be plain values (text, numbers, true/false), got {bad[0]!r}")
        if len(self.choices) < 2:
            raise ValueError(f"{self.name}: fewer than two choices searches nothing; fix it under `fixed` instead")
        if len(set(self.choices)) < len(self.choices):
            raise ValueError(f"{self.name}: choices repeat a value: {list(self.choices)}")

    def fitted(self) -> Param:
        """This param checked against its setting's type; ranges of float settings get float bounds."""
        if self.name not in SEARCHABLE:
            raise ValueError(f"{self.name!r} cannot be searched; searchable: {', '.join(SEARCHABLE)} "
                             "(set it under `fixed`)")
        kind = NUMERIC.get(self.name)
        if kind is None:
            if self.choices is None:
                raise ValueError(f"{self.name} is categorical: search it with choices: [...], not low/high")
            return self
        if self.choices is not None:
            for choice in self.choices:
                # None is allowed only where it is the setting's own "off" value (no MACs or latency budget)
                ok = (isinstance(choice, int) and not isinstance(choice, bool)) if kind is int else (
                    is_number(choice) or (choice is None and self.name in ("macs_target", "latency_target")))
                if not ok:
                    wanted = "an integer" if kind is int else "a number"
                    raise ValueError(f"{self.name}: choice {choice!r} is not {wanted}")
            return self
        if kind is int and not self.integer:
            raise ValueError(f"{self.name} is an integer setting: add `int: true` to its range")
        if kind is float and self.integer:
            ints = ", ".join(name for name, k in NUMERIC.items() if k is int)
            raise ValueError(f"{self.name}: int: true is only for integer settings ({ints})")
        return self if kind is int else dataclasses.replace(self, low=float(self.low), high=float(self.high))

    # ------------------------------------------------------------------------------------ reading
    def corners(self) -> tuple:
        """Values that bound what this parameter can sample: both ends of a range, the smallest and the largest
        numeric choice, and every non-numeric choice (config checks are monotone in the numbers)."""
        if self.choices is None:
            return (self.low, self.high)
        numbers = [c for c in self.choices if is_number(c)]
        others = [c for c in self.choices if not is_number(c)]
        edges = tuple(dict.fromkeys((min(numbers), max(numbers)))) if numbers else ()  # dict: drops a repeat
        return edges + tuple(others)

    def midpoint(self):
        """The middle of a range (geometric for log ranges, rounded for integers); the first choice."""
        if self.choices is not None:
            return self.choices[0]
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return round(middle) if self.integer else middle

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, **({"log": True} if self.log else {}),
                **({"int": True} if self.integer else {})}

    # ------------------------------------------------------------------------------------ conversions
    def ray(self):
        """A Ray Tune domain (integer ranges include ``high``, as Optuna's do)."""
        from ray import tune

        if self.choices is not None:
            return tune.choice(list(self.choices))
        if self.integer:
            return (tune.lograndint if self.log else tune.randint)(self.low, self.high + 1)
        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)

    def optuna(self):
        """An Optuna distribution."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        kind = IntDistribution if self.integer else FloatDistribution
        return kind(self.low, self.high, log=self.log)

    def suggest(self, trial):
        """The value an Optuna trial suggests for this parameter."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _reads_as_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)
