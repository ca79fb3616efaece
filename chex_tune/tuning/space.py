"""Search spaces: the fixed settings of a sweep, the settings it searches, and what it optimizes.

One ``SearchSpace`` serves every sweep. The built-in loop's spaces are YAML files under ``search_spaces/``::

    fixed:                                   # any RunConfig setting, flat names
      model: resnet18
      epochs: 30
    search:                                  # {low, high[, log: true][, int: true]} or {choices: [...]}
      sparsity: {low: 0.3, high: 0.8}
      period: {low: 10, high: 400, log: true, int: true}
      scorer: {choices: [css, l1]}
    objectives: [val_acc:max, macs:min]      # optional; this is the default
    description: free text                   # optional

For a user's own trainable, ``ChexSpace(sparsity=(0.3, 0.8), period=(1, 4))`` builds the same object from
keywords; ``space.ray()`` gives Ray Tune entries to merge with the user's own (``merge_spaces``),
``space.suggest(trial)`` asks an Optuna trial, ``space.optuna_distributions()`` gives Optuna's distributions.

Everything is checked when the space is built, including that every configuration the search can sample
is valid (tried at the corners of the box), so a bad space fails at load time with the file and the key in
the message instead of failing trials one by one mid-sweep. Only PyYAML is needed to build and check a
space: Ray and Optuna are imported by the conversions alone.
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chex_tune.config import RunConfig, start_preset
from chex_tune.core.errors import UserError, load_yaml
from chex_tune.train.metrics import BUILTIN_OBJECTIVES
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, parse_objectives
from chex_tune.tuning.param import SEARCHABLE, Param, check_mapping, is_number
from chex_tune.tuning.protocol import FIXED_KEY, RESERVED_KEYS, SEARCHED_KEY
from chex_tune.tuning.settings import REGROW_FRACTION, chex_fields, resolve

TOP_LEVEL_KEYS = ("fixed", "search", "objectives", "description")


def _shipped_spaces() -> Path:
    """The shipped spaces: ``chex_tune/search_spaces`` in an installed wheel (pyproject maps the checkout's
    top-level ``search_spaces/`` there), else that top-level folder of a source checkout."""
    packaged = Path(str(importlib.resources.files("chex_tune") / "search_spaces"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "search_spaces"


SEARCH_SPACES_DIR = _shipped_spaces()


def _setting_names() -> set[str]:
    return set(RunConfig().to_dict()) | {REGROW_FRACTION}


def _check_known_settings(names, where: str) -> None:
    unknown = [name for name in names if name not in _setting_names()]
    if unknown:
        try:  # only unknown names: RunConfig raises its own message (with did-you-mean hints) before building
            RunConfig.from_dict(dict.fromkeys(unknown))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class SearchSpace:
    """Fixed settings + searched params + objectives; ``from_dict``, ``load`` and ``ChexSpace`` are the usual
    constructors, and building one directly validates it too."""

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
        """A space for the built-in loop, as its YAML reads (its objectives are metrics that loop reports)."""
        try:
            check_mapping(data, TOP_LEVEL_KEYS, f"a search space is a mapping with keys {', '.join(TOP_LEVEL_KEYS)}",
                          "unknown top-level key(s)")
            search = data.get("search")
            if not isinstance(search, dict) or not search:
                raise ValueError("search: needs at least one parameter, e.g. sparsity: {low: 0.3, high: 0.8}")
            params = {}
            for name, spec in search.items():
                if name not in SEARCHABLE:
                    _check_known_settings([name], "search")
                params[name] = _in_section("search", Param.from_spec, name, spec)
            objectives = parse_objectives(data.get("objectives", DEFAULT_OBJECTIVES), allowed=BUILTIN_OBJECTIVES)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return cls(fixed=data.get("fixed") or {}, params=params, objectives=objectives,  # `fixed:` alone is None
                   description=data.get("description") or "", source=source)

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
            raise FileNotFoundError(f"search space file {str(path)!r} not found; give a YAML file or the name of a "
                                    f"shipped space: {', '.join(shipped) or 'none found'}")
        data = load_yaml(path, "search space file")  # a directory, binary file or YAML syntax error: UserError
        if data is None:
            raise UserError(f"{path}: the file is empty; a space needs at least `search:` (see {SEARCH_SPACES_DIR})")
        return cls.from_dict(data, source=str(path))

    # ------------------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if not isinstance(self.fixed, dict):
            raise ValueError(f"fixed: expected a mapping of settings, got {self.fixed!r}")
        _check_known_settings(self.fixed, "fixed")
        if not isinstance(self.params, dict):  # empty: everything fixed (a user's own param_space may search)
            raise ValueError(f"search: expected a mapping of names to Params, got {self.params!r}")
        params = {}
        for name, param in self.params.items():
            if not isinstance(param, Param) or param.name != name:
                raise ValueError(f"search: {name!r} must map to Param({name!r}, ...), got {param!r}")
            params[name] = _in_section("search", Param.fitted, param)
        both = [name for name in params if name in self.fixed]
        if both:
            raise ValueError(f"{', '.join(both)}: both searched and fixed; remove it from `fixed` or from `search`")
        if {"regrow_ratio", REGROW_FRACTION} <= {*params, *self.fixed}:
            raise ValueError(f"give regrow_ratio or {REGROW_FRACTION}, not both")
        if not isinstance(self.description, str):
            raise ValueError(f"description must be text, got {self.description!r}")
        # Frozen: normalized copies go in through object.__setattr__ (a caller's dict is never kept).
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "objectives", parse_objectives(self.objectives or DEFAULT_OBJECTIVES))
        self._check_corners()

    def sample_corners(self) -> list[dict]:
        """Every combination of the searched params' bounding values (``Param.corners``; a few dozen at most)."""
        names = list(self.params)
        values = []
        for name in names:
            corners = self.params[name].corners()
            # sparsity 0 means "train dense" and skips the regrow_ratio <= sparsity check, so the range's low end
            # alone hides the values just above it, which do get the check: try the smallest positive one too.
            if name == "sparsity" and 0 in corners:
                corners += (math.nextafter(0.0, 1.0),)
            values.append(corners)
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    def _check_corners(self) -> None:
        defaults = RunConfig().to_dict()
        for corner in self.sample_corners():
            values = resolve({**self.fixed, **corner})
            merged = {**defaults, **values}
            # The one constraint that ties two searched CHEX params: say it in terms of the ranges.
            if merged["macs_target"] is None and merged["latency_target"] is None and \
                    0 < merged["sparsity"] < merged["regrow_ratio"]:
                raise ValueError(self._regrow_message(merged))
            try:  # distillation's teacher may come with the sweep (--init): its plan checks that, before any trial
                RunConfig.from_dict(values, preset=start_preset(values))
            except ValueError as exc:
                where = ", ".join(f"{name}={value!r}" for name, value in corner.items())
                raise ValueError(f"a sampled configuration would be invalid ({where}): {exc}") from None

    def _regrow_message(self, merged: dict) -> str:
        def side(name: str, reach: str, value) -> str:
            if name in self.params:
                numbers = [v for v in self.params[name].corners() if is_number(v)]
                return f"{name} {reach} {max(numbers) if reach == 'up to' else min(numbers)}"
            return f"{name} {'fixed at' if name in self.fixed else 'at its default'} {value}"

        return (f"a sampled configuration could violate regrow_ratio <= sparsity: "
                f"{side('regrow_ratio', 'up to', merged['regrow_ratio'])} but "
                f"{side('sparsity', 'down to', merged['sparsity'])}; keep regrow_ratio's largest value at or "
                f"below sparsity's smallest")

    # ---------------------------------------------------------------------------------- use
    @property
    def searched(self) -> tuple[str, ...]:
        """The names sampled per trial, sorted."""
        return tuple(sorted(self.params))

    def non_chex_settings(self) -> list[str]:
        """Settings of this space that a user's own trainable cannot read (only the built-in loop has them)."""
        allowed = {*chex_fields(), REGROW_FRACTION}
        return sorted(name for name in (*self.fixed, *self.params) if name not in allowed)

    def run_config(self, sampled: dict, **overrides) -> RunConfig:
        """The trial's RunConfig: fixed settings, then the sampled values, then ``overrides`` (e.g. epochs from
        the command line), later ones winning; a trained start's run takes the "finetune" preset."""
        missing = [name for name in self.params if name not in sampled and name not in overrides]
        if missing:
            raise ValueError(f"{self.source}: no sampled value for searched setting(s) {', '.join(missing)}")
        values = resolve({**self.fixed, **sampled, **overrides})
        return RunConfig.from_dict(values, preset=start_preset(values))

    def _constants(self) -> dict:
        return {FIXED_KEY: dict(self.fixed), SEARCHED_KEY: list(self.searched)}

    def ray(self) -> dict:
        """Ray Tune ``param_space`` entries: the searched settings as domains, plus the constants a trial reads."""
        return {**{name: param.ray() for name, param in self.params.items()}, **self._constants()}

    def suggest(self, trial) -> dict:
        """Ask an Optuna trial for this space's values; returns the trial's config (read by ChexReporter). A name
        the trial already suggested (the user's own parameter) is a collision: an error naming it."""
        taken = sorted(set(trial.params) & set(self.params))
        if taken:
            raise ValueError(f"the Optuna trial already has parameter(s) {taken}, which the CHEX space suggests too; "
                             "rename your own parameter(s)")
        return {**{name: param.suggest(trial) for name, param in self.params.items()}, **self._constants()}

    def optuna_distributions(self) -> dict:
        """name -> Optuna distribution (for ``OptunaSearch(space=...)``)."""
        return {name: param.optuna() for name, param in self.params.items()}

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


def _in_section(section: str, make, *args):
    try:
        return make(*args)
    except ValueError as exc:
        raise ValueError(f"{section}: {exc}") from None


# ------------------------------------------------------------------------------------ from keywords
class _Default(tuple):
    """A keyword's default range, told apart from the same range passed by the caller (who then named it)."""


_SPARSITY, _REGROW_FRACTION = _Default((0.3, 0.8)), _Default((0.0, 0.6))


def ChexSpace(sparsity=_SPARSITY, macs_target=None, regrow_fraction=_REGROW_FRACTION,  # noqa: N802
              period=(1, 8), *, regrow_ratio=None,
              period_log: bool = True, scorer: Sequence[str] | str | None = None,
              sampler: Sequence[str] | str | None = None, allocator: Sequence[str] | str | None = None,
              fixed: Mapping | None = None) -> SearchSpace:
    """The CHEX part of a search, from keywords: a ``SearchSpace`` of CHEX settings only.

    A ``(low, high)`` tuple searches a setting, a plain value fixes it. sparsity / macs_target: the budget (exactly
    one; a macs_target replaces the default sparsity range); regrow_fraction: the regrow ratio as a fraction of the
    budget's channel sparsity; regrow_ratio (here or in ``fixed``): the regrow ratio itself, instead of the default
    regrow_fraction (give one of the two); period: an integer range (log-scaled unless ``period_log=False``); scorer,
    sampler, allocator: names to choose from (None: the engine's default); fixed: any other CHEX setting, e.g.
    ``{"explore_until": 0.6, "unit": "epoch"}``.
    """
    if macs_target is not None and isinstance(sparsity, _Default):
        sparsity = None  # a MACs budget replaces the default channel budget
    if (sparsity is None) == (macs_target is None):
        raise ValueError("ChexSpace needs exactly one budget: sparsity=(low, high) or macs_target=(low, high), "
                         f"got sparsity={sparsity!r} and macs_target={macs_target!r}")
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(chex_fields()))
    if unknown:
        raise ValueError(f"ChexSpace fixed: unknown CHEX setting(s) {unknown}; allowed: {sorted(chex_fields())}")
    if regrow_ratio is not None or "regrow_ratio" in fixed:
        if not isinstance(regrow_fraction, _Default) and regrow_fraction is not None:
            given = f"regrow_ratio={regrow_ratio!r}" if regrow_ratio is not None else \
                f"fixed={{'regrow_ratio': {fixed['regrow_ratio']!r}}}"
            raise ValueError(f"ChexSpace: give {given} or regrow_fraction={regrow_fraction!r}, not both")
        regrow_fraction = None  # the user's regrow ratio replaces the default fraction
    items = {"sparsity": sparsity, "macs_target": macs_target, REGROW_FRACTION: regrow_fraction,
             "regrow_ratio": regrow_ratio, "period": period, "scorer": scorer, "sampler": sampler,
             "allocator": allocator}
    params = {}
    for name, value in items.items():
        if value is None:
            continue
        if name in fixed:
            raise ValueError(f"ChexSpace fixed: {name} is set by the space itself; drop it from fixed")
        param = _chex_param(name, value, log=name == "period" and period_log)
        if param is None:
            fixed[name] = value[0] if isinstance(value, (list, tuple)) else value
        else:
            params[name] = param
    return SearchSpace(fixed=fixed, params=params, source="ChexSpace")


def _chex_param(name: str, value, *, log: bool) -> Param | None:
    """A Param for a ranged (numeric) or listed (names) keyword; None when the value fixes the setting."""
    if isinstance(value, str) or (isinstance(value, Sequence) and len(value) == 1):
        return None
    if not isinstance(value, Sequence):
        if not is_number(value):
            raise ValueError(f"ChexSpace {name} must be a number or a (low, high) range, got {value!r}")
        return None
    if name in ("scorer", "sampler", "allocator"):
        return Param(name, choices=tuple(dict.fromkeys(value)))
    if len(value) != 2 or not all(is_number(v) for v in value):
        raise ValueError(f"ChexSpace {name} must be a number or a (low, high) range, got {value!r}")
    integer = name == "period"
    if integer and not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"ChexSpace period must be a positive integer or an integer range (low, high), got {value!r}")
    return Param(name, low=value[0], high=value[1], log=log, integer=integer)


def domain_keys(space: Mapping, prefix: str = "") -> list[str]:
    """Names of the sampled entries of a Ray ``param_space`` (nested dicts as ``a/b``, like Ray flattens them)."""
    from ray.tune.search.sample import Domain

    keys = []
    for key, value in space.items():
        if isinstance(value, Domain):
            keys.append(f"{prefix}{key}")
        elif isinstance(value, Mapping):
            keys += domain_keys(value, f"{prefix}{key}/")
    return sorted(keys)


def merge_spaces(*spaces: Mapping) -> dict:
    """One ``param_space`` from several (the user's and ``ChexSpace(...).ray()``); a key in two is an error."""
    merged: dict = {}
    for space in spaces:
        if not isinstance(space, Mapping):
            raise ValueError(f"a search space is a dict of names to distributions or values, "
                             f"got {type(space).__name__}")
        collide = sorted(set(merged) & set(space))
        if collide:
            raise ValueError(f"search space key(s) {collide} are in two of the merged spaces (yours and chex-tune's "
                             f"CHEX parameters; chex-tune's use {', '.join(RESERVED_KEYS)} and the CHEX setting "
                             "names); rename your key(s)")
        merged.update(space)
    return merged
