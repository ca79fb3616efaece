"""Search spaces: the fixed settings of a sweep, the CHEX parameters it searches, and what it optimizes.

A space is usually a YAML file under ``search_spaces/``::

    fixed:                                   # any RunConfig setting, flat names
      model: resnet18
      epochs: 30
    search:                                  # {low, high[, log: true][, int: true]} or {choices: [...]}
      sparsity: {low: 0.3, high: 0.8}
      period: {low: 10, high: 400, log: true, int: true}
      scorer: {choices: [css, l1]}
    objectives: [val_acc:max, macs:min]      # optional; this is the default
    description: free text                   # optional

Everything is checked when the space is built, including that every configuration the search can
sample is a valid ``RunConfig`` (tried at the corners of the box), so a bad space fails at load time
with the file and the key in the message instead of failing trials one by one mid-sweep.

Only PyYAML is needed here: optuna is imported inside ``optuna_distributions`` alone, and Ray and
MLflow never, so the CLI can validate a space on a machine without the [tune] extra.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from chex_tune.config import ChexConfig, RunConfig, TrainConfig, _is_int
from chex_tune.errors import UserError, load_yaml
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, Objective, parse_objectives  # noqa: F401 (re-exported)

# What the built-in trainable reports that can be optimized (test_acc is reported too, never selected on).
OBJECTIVE_METRICS = ("val_acc", "macs", "params", "latency_ms")

# Numeric settings a space may search with a range (or with numeric choices), and their type.
_NUMERIC = {"sparsity": float, "regrow_ratio": float, "period": int, "explore_until": float, "lr": float,
            "macs_target": float}
# Categorical settings: searched with choices only.
_CATEGORICAL = ("scorer", "sampler", "allocator", "reallocate")
SEARCHABLE = (*_NUMERIC, *_CATEGORICAL)

TOP_LEVEL_KEYS = ("fixed", "search", "objectives", "description")
PARAM_KEYS = ("low", "high", "log", "int", "choices")



def _shipped_spaces() -> Path:
    """The shipped spaces: ``chex_tune/search_spaces`` in an installed wheel (pyproject maps the checkout's
    top-level ``search_spaces/`` there), else that top-level folder of a source checkout."""
    packaged = Path(str(importlib.resources.files("chex_tune") / "search_spaces"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "search_spaces"


SEARCH_SPACES_DIR = _shipped_spaces()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _run_config_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(ChexConfig)}


def _check_known_settings(names, where: str) -> None:
    unknown = [name for name in names if name not in _run_config_keys()]
    if unknown:
        try:  # only unknown names: RunConfig raises its own message (with did-you-mean hints) before building
            RunConfig.from_dict(dict.fromkeys(unknown))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class Param:
    """One searched setting: a range (``low``..``high``, optionally log-scaled or integer) or ``choices``."""

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

    def _check_range(self) -> None:
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is None:
                raise ValueError(f"{self.name}: a range needs both low and high")
            if not _is_number(value):
                hint = ""
                if isinstance(value, str):
                    try:
                        float(value)
                        hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
                    except ValueError:
                        pass
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

    def corners(self) -> tuple:
        """Values that bound what this parameter can sample: both ends of a range, the smallest and the largest
        numeric choice, and every non-numeric choice (config checks are monotone in the numbers)."""
        if self.choices is None:
            return (self.low, self.high)
        numbers = [c for c in self.choices if _is_number(c)]
        others = [c for c in self.choices if not _is_number(c)]
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
        spec = {"low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.integer:
            spec["int"] = True
        return spec


def _param_from_spec(name, spec) -> Param:
    if not isinstance(name, str):
        raise ValueError(f"search: setting names are text, got {name!r}")
    if name not in SEARCHABLE:
        _check_known_settings([name], "search")
        raise ValueError(f"search: {name!r} cannot be searched; searchable: {', '.join(SEARCHABLE)} "
                         f"(set it under `fixed`)")
    if not isinstance(spec, dict):
        raise ValueError(f"search: {name}: expected a mapping like {{low: 0.3, high: 0.8}} or "
                         f"{{choices: [a, b]}}, got {spec!r}")
    unknown = sorted(set(spec) - set(PARAM_KEYS), key=str)
    if unknown:
        raise ValueError(f"search: {name}: unknown key(s) {unknown}; allowed: {', '.join(PARAM_KEYS)}")
    choices = spec.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ValueError(f"search: {name}: choices must be a list, got {choices!r}")
    try:
        if spec.get("int") is True and _NUMERIC.get(name) is float:  # before the bounds check: the real mistake
            _fit_param_to_setting(Param(name, 0, 1, integer=True))
        return Param(name, low=spec.get("low"), high=spec.get("high"), log=spec.get("log", False),
                     integer=spec.get("int", False), choices=None if choices is None else tuple(choices))
    except ValueError as exc:
        raise ValueError(f"search: {exc}") from None


def _fit_param_to_setting(param: Param) -> Param:
    """Check that the param's form suits its setting's type; ranges of float settings get float bounds."""
    kind = _NUMERIC.get(param.name)
    if kind is None:
        if param.choices is None:
            raise ValueError(f"{param.name} is categorical: search it with choices: [...], not low/high")
        return param
    if param.choices is not None:
        for choice in param.choices:
            # None is allowed only where it is the setting's own "off" value (macs_target: no MACs budget)
            ok = _is_int(choice) if kind is int else (
                _is_number(choice) or (choice is None and param.name == "macs_target"))
            if not ok:
                wanted = "an integer" if kind is int else "a number"
                raise ValueError(f"{param.name}: choice {choice!r} is not {wanted}")
        return param
    if kind is int and not param.integer:
        raise ValueError(f"{param.name} is an integer setting: add `int: true` to its range")
    if kind is float and param.integer:
        ints = ", ".join(name for name, k in _NUMERIC.items() if k is int)
        raise ValueError(f"{param.name}: int: true is only for integer settings ({ints})")
    return param if kind is int else dataclasses.replace(param, low=float(param.low), high=float(param.high))


# ---------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class SearchSpace:
    """Fixed settings + searched params + objectives. ``from_dict``/``load`` are the usual constructors;
    building one directly validates it too."""

    fixed: dict
    params: dict  # name -> Param, in search order
    objectives: tuple = ()  # of Objective; empty = the default
    description: str = ""
    source: str = "<dict>"  # the file (or "<dict>") named in every error

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ValueError as exc:
            raise ValueError(f"{self.source}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> SearchSpace:
        try:
            if not isinstance(data, dict):
                raise ValueError(f"a search space is a mapping with keys {', '.join(TOP_LEVEL_KEYS)}; "
                                 f"got {type(data).__name__}")
            unknown = sorted(set(data) - set(TOP_LEVEL_KEYS), key=str)
            if unknown:
                raise ValueError(f"unknown top-level key(s) {unknown}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
            fixed = data.get("fixed") or {}  # `fixed:` with nothing under it loads as None
            search = data.get("search")
            if not isinstance(search, dict) or not search:
                raise ValueError("search: needs at least one parameter, e.g. sparsity: {low: 0.3, high: 0.8}")
            params = {name: _param_from_spec(name, spec) for name, spec in search.items()}
            objectives = parse_objectives(data.get("objectives", DEFAULT_OBJECTIVES), allowed=OBJECTIVE_METRICS)
            description = data.get("description") or ""
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return cls(fixed=fixed, params=params, objectives=objectives, description=description, source=source)

    @classmethod
    def load(cls, path) -> SearchSpace:
        """Read a YAML space. A bare name (``fashion_mnist_resnet18``) also finds a shipped space."""
        path = Path(path)
        if not path.is_file() and len(path.parts) == 1:
            for candidate in (SEARCH_SPACES_DIR / path, SEARCH_SPACES_DIR / f"{path}.yaml"):
                if candidate.is_file():
                    path = candidate
                    break
        if not path.exists():
            shipped = sorted(p.name for p in SEARCH_SPACES_DIR.glob("*.yaml")) if SEARCH_SPACES_DIR.is_dir() else []
            listing = ", ".join(shipped) if shipped else "none found"
            raise FileNotFoundError(f"search space file {str(path)!r} not found; give a YAML file or the name of a "
                                    f"shipped space: {listing}")
        data = load_yaml(path, "search space file")  # a directory, binary file or YAML syntax error: UserError
        if data is None:
            raise UserError(f"{path}: the file is empty; a space needs at least `search:` (see {SEARCH_SPACES_DIR})")
        return cls.from_dict(data, source=str(path))

    # ------------------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if not isinstance(self.fixed, dict):
            raise ValueError(f"fixed: expected a mapping of settings, got {self.fixed!r}")
        _check_known_settings(self.fixed, "fixed")
        if not isinstance(self.params, dict) or not self.params:
            raise ValueError("search: needs at least one parameter")
        params = {}
        for name, param in self.params.items():
            if not isinstance(param, Param) or param.name != name:
                raise ValueError(f"search: {name!r} must map to Param({name!r}, ...), got {param!r}")
            if name not in SEARCHABLE:
                raise ValueError(f"search: {name!r} cannot be searched; searchable: {', '.join(SEARCHABLE)}")
            try:
                params[name] = _fit_param_to_setting(param)
            except ValueError as exc:
                raise ValueError(f"search: {exc}") from None
        both = [name for name in params if name in self.fixed]
        if both:
            raise ValueError(f"{', '.join(both)}: both searched and fixed; remove it from `fixed` or from `search`")
        if not isinstance(self.description, str):
            raise ValueError(f"description must be text, got {self.description!r}")
        # Frozen: normalized copies go in through object.__setattr__ (a caller's dict is never kept).
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "objectives", parse_objectives(self.objectives or DEFAULT_OBJECTIVES,
                                                                 allowed=OBJECTIVE_METRICS))
        self._check_corners()

    def _corner_values(self, param: Param) -> tuple:
        values = param.corners()
        # sparsity 0 means "train dense" and skips the regrow_ratio <= sparsity check, so the range's low end
        # alone hides the values just above it, which do get the check: try the smallest positive one too.
        if param.name == "sparsity" and 0 in values:
            values += (math.nextafter(0.0, 1.0),)
        return values

    def sample_corners(self) -> list[dict]:
        """Every combination of the searched params' bounding values (see ``Param.corners``).

        At most 2^6 numeric corners times the categorical choices (a few dozen): cheap to build them all.
        """
        names = list(self.params)
        values = [self._corner_values(self.params[name]) for name in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    def _check_corners(self) -> None:
        defaults = RunConfig().to_dict()
        for corner in self.sample_corners():
            merged = {**defaults, **self.fixed, **corner}
            # The one constraint that ties two searched CHEX params: say it in terms of the ranges.
            if merged["macs_target"] is None and 0 < merged["sparsity"] < merged["regrow_ratio"]:
                raise ValueError(self._regrow_message(merged))
            try:
                RunConfig.from_dict({**self.fixed, **corner})
            except ValueError as exc:
                where = ", ".join(f"{name}={value!r}" for name, value in corner.items())
                raise ValueError(f"a sampled configuration would be invalid ({where}): {exc}") from None

    def _regrow_message(self, merged: dict) -> str:
        def side(name: str, reach: str, value) -> str:
            if name in self.params:
                param = self.params[name]
                numbers = [v for v in param.corners() if _is_number(v)]
                return f"{name} {reach} {max(numbers) if reach == 'up to' else min(numbers)}"
            return f"{name} {'fixed at' if name in self.fixed else 'at its default'} {value}"

        return (f"a sampled configuration could violate regrow_ratio <= sparsity: "
                f"{side('regrow_ratio', 'up to', merged['regrow_ratio'])} but "
                f"{side('sparsity', 'down to', merged['sparsity'])}; keep regrow_ratio's largest value at or "
                f"below sparsity's smallest")

    # ---------------------------------------------------------------------------------- use
    def run_config(self, sampled: dict, **overrides) -> RunConfig:
        """The trial's RunConfig: fixed settings, then the sampled values, then ``overrides`` (e.g. epochs from
        the command line), later ones winning."""
        missing = [name for name in self.params if name not in sampled and name not in overrides]
        if missing:
            raise ValueError(f"{self.source}: no sampled value for searched setting(s) {', '.join(missing)}")
        return RunConfig.from_dict({**self.fixed, **sampled, **overrides})

    def optuna_distributions(self) -> dict:
        """name -> optuna distribution (Float/Int for ranges, Categorical for choices)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        distributions = {}
        for name, param in self.params.items():
            if param.choices is not None:
                distributions[name] = CategoricalDistribution(param.choices)
            elif param.integer:
                distributions[name] = IntDistribution(param.low, param.high, log=param.log)
            else:
                distributions[name] = FloatDistribution(param.low, param.high, log=param.log)
        return distributions

    def midpoint(self) -> dict:
        """The centre of the space (a sensible first trial to enqueue)."""
        return {name: param.midpoint() for name, param in self.params.items()}

    def to_dict(self) -> dict:
        """The YAML form: ``SearchSpace.from_dict(space.to_dict())`` rebuilds an equal space."""
        data = {"fixed": dict(self.fixed), "search": {name: p.to_dict() for name, p in self.params.items()},
                "objectives": [str(objective) for objective in self.objectives]}
        if self.description:
            data["description"] = self.description
        return data
