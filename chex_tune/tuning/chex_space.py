"""The CHEX parameters of a search, as Ray Tune distributions or Optuna suggestions, to merge with a user's own.

    chex = ChexSpace(sparsity=(0.3, 0.8), period=(1, 4))
    param_space = merge_spaces({"lr": tune.loguniform(1e-3, 0.1)}, chex.ray())      # Ray Tune
    settings = chex.suggest(trial)                                                 # Optuna
    ChexReporter(model, x, config, ...)     # reads the CHEX settings back from the trial's config

The budget is ``sparsity`` (fraction of prunable channels removed) or ``macs_target`` (fraction of dense
MACs kept), each a ``(low, high)`` range or a fixed number. The regrow ratio is sampled as
``regrow_fraction`` of the budget's channel sparsity (``regrow_ratio = regrow_fraction * sparsity``), so
CHEX's ``regrow_ratio <= sparsity`` holds at every sampled point and no corner of the box is rejected.
Scorers, regrowth samplers and allocators are searched by listing names from the engine's registries.

In a Ray trial config the searched values sit at the top level (as Ray and Optuna sample them) next to
two constants: ``chex_fixed`` (CHEX settings fixed for every trial) and ``chex_searched`` (the names
sampled here). Only those names are read back as CHEX settings, so a user's own ``seed`` or ``lr`` is
never mistaken for one; a user key that collides with them is an error (``merge_spaces``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chex_tune.config import ChexConfig

FIXED_KEY = "chex_fixed"  # CHEX settings every trial shares (the built-in trainable: every RunConfig setting)
SEARCHED_KEY = "chex_searched"  # names of the sampled CHEX settings, at the top level of the config
RESERVED_KEYS = (FIXED_KEY, SEARCHED_KEY, "chex_threads")
REGROW_FRACTION = "regrow_fraction"  # regrow_ratio as a fraction of the budget's channel sparsity

Range = tuple  # (low, high)


def chex_fields() -> tuple[str, ...]:
    """The engine's CHEX settings, read from ChexConfig itself (its fields change; nothing here lists them)."""
    return tuple(f.name for f in dataclasses.fields(ChexConfig))


def _registry(name: str) -> tuple[str, ...]:
    """Allowed names of a categorical CHEX setting, from the engine's registries at run time."""
    if name == "scorer":
        from chex_tune.core.scoring import SCORERS as names
    elif name == "sampler":
        from chex_tune.core.regrow import SAMPLERS as names
    else:
        from chex_tune.core.allocation import ALLOCATORS as names
    return tuple(names)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ChexSpace:
    """The CHEX part of a search. Ranges are ``(low, high)``; a plain value fixes the setting.

    sparsity / macs_target: the budget (exactly one); regrow_fraction: the regrow ratio as a fraction of
    the budget's channel sparsity; period: an integer range (log-scaled with ``period_log``); scorer,
    sampler, allocator: names to choose from (None: the engine's default); fixed: any other CHEX
    setting, e.g. ``{"explore_until": 0.6, "unit": "epoch"}``.
    """

    sparsity: Range | float | None = (0.3, 0.8)
    macs_target: Range | float | None = None
    regrow_fraction: Range | float = (0.0, 0.6)
    period: Range | int = (1, 8)
    period_log: bool = True
    scorer: Sequence[str] | None = None
    sampler: Sequence[str] | None = None
    allocator: Sequence[str] | None = None
    fixed: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.macs_target is not None and self.sparsity == ChexSpace.sparsity:
            object.__setattr__(self, "sparsity", None)  # a MACs budget replaces the default channel budget
        if (self.sparsity is None) == (self.macs_target is None):
            raise ValueError("ChexSpace needs exactly one budget: sparsity=(low, high) or macs_target=(low, high)")
        self._check_number("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        self._check_number("macs_target", self.macs_target, 0.0, 1.0, low_open=True)
        self._check_number("regrow_fraction", self.regrow_fraction, 0.0, 1.0)
        self._check_period()
        for name in ("scorer", "sampler", "allocator"):
            choices = getattr(self, name)
            if choices is None:
                continue
            if isinstance(choices, str):
                choices = (choices,)
            allowed = _registry(name)
            unknown = [c for c in choices if c not in allowed]
            if unknown or not choices:
                raise ValueError(f"ChexSpace {name}: unknown name(s) {unknown or list(choices)}; "
                                 f"choose from: {', '.join(allowed)}")
            object.__setattr__(self, name, tuple(dict.fromkeys(choices)))
        fixed = dict(self.fixed)
        known = set(chex_fields())
        unknown = sorted(set(fixed) - known)
        if unknown:
            raise ValueError(f"ChexSpace fixed: unknown CHEX setting(s) {unknown}; allowed: {sorted(known)}")
        both = sorted(set(fixed) & (set(self.searched) | {"regrow_ratio"}))
        if both:
            raise ValueError(f"ChexSpace fixed: {both} are set by the space itself (searched or derived); "
                             "drop them from fixed")
        object.__setattr__(self, "fixed", fixed)
        for corner in self._corners():  # every sampled point must be a valid ChexConfig
            try:
                resolve_chex_settings(corner)
            except ValueError as exc:
                raise ValueError(f"ChexSpace: the point {corner} is not a valid CHEX setting: {exc}") from None

    @staticmethod
    def _check_number(name, value, low, high, *, low_open=False, high_open=False) -> None:
        if value is None:
            return
        values = value if isinstance(value, tuple) else (value,)
        ok = (isinstance(value, (tuple, float, int)) and not isinstance(value, bool)
              and len(values) in (1, 2) and all(_is_number(v) for v in values)
              and all((low < v if low_open else low <= v) and (v < high if high_open else v <= high) for v in values)
              and (len(values) == 1 or values[0] < values[1]))
        if not ok:
            span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise ValueError(f"ChexSpace {name} must be a number or a (low, high) range with low < high, in {span}; "
                             f"got {value!r}")

    def _check_period(self) -> None:
        values = self.period if isinstance(self.period, tuple) else (self.period,)
        ints = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
        if not (ints and len(values) in (1, 2) and (len(values) == 1 or values[0] < values[1])):
            raise ValueError(f"ChexSpace period must be a positive integer or an integer range (low, high) with "
                             f"low < high; got {self.period!r}")

    # ------------------------------------------------------------------------------ the space
    @property
    def budget(self) -> str:
        return "sparsity" if self.sparsity is not None else "macs_target"

    def _items(self) -> dict:
        """Name -> range, choices tuple or fixed value, for everything this space sets."""
        items = {self.budget: getattr(self, self.budget), REGROW_FRACTION: self.regrow_fraction,
                 "period": self.period}
        for name in ("scorer", "sampler", "allocator"):
            if getattr(self, name) is not None:
                choices = getattr(self, name)
                items[name] = choices if len(choices) > 1 else choices[0]
        return items

    @property
    def searched(self) -> tuple[str, ...]:
        """The names sampled per trial (ranges and several choices), sorted."""
        return tuple(sorted(n for n, v in self._items().items() if isinstance(v, tuple)))

    def fixed_settings(self) -> dict:
        """The settings every trial shares: ``fixed`` plus this space's single values."""
        return {**self.fixed, **{n: v for n, v in self._items().items() if not isinstance(v, tuple)}}

    def _corners(self):
        items = self._items()
        names = [n for n, v in items.items() if isinstance(v, tuple)]
        for values in itertools.product(*(items[n] for n in names)):
            yield {**self.fixed_settings(), **dict(zip(names, values))}

    def ray(self) -> dict:
        """Ray Tune ``param_space`` entries: the sampled settings as distributions, plus the two constants."""
        from ray import tune

        space: dict = {}
        for name, value in self._items().items():
            if not isinstance(value, tuple):
                continue
            if name == "period":
                low, high = value
                space[name] = tune.lograndint(low, high + 1) if self.period_log else tune.randint(low, high + 1)
            elif all(isinstance(v, str) for v in value):
                space[name] = tune.choice(list(value))
            else:
                space[name] = tune.uniform(*value)
        return {**space, FIXED_KEY: self.fixed_settings(), SEARCHED_KEY: list(self.searched)}

    def suggest(self, trial) -> dict:
        """Ask an Optuna trial for this space's values; returns the trial's config (read by ChexReporter).

        A name the trial already suggested (the user's own parameter) is a collision: an error naming it.
        """
        taken = sorted(set(trial.params) & set(self.searched))
        if taken:
            raise ValueError(f"the Optuna trial already has parameter(s) {taken}, which the CHEX space suggests too; "
                             "rename your own parameter(s)")
        config: dict = {}
        for name, value in self._items().items():
            if not isinstance(value, tuple):
                continue
            if name == "period":
                config[name] = trial.suggest_int(name, value[0], value[1], log=self.period_log)
            elif all(isinstance(v, str) for v in value):
                config[name] = trial.suggest_categorical(name, list(value))
            else:
                config[name] = trial.suggest_float(name, *value)
        return {**config, FIXED_KEY: self.fixed_settings(), SEARCHED_KEY: list(self.searched)}

    def optuna_distributions(self) -> dict:
        """The sampled settings as Optuna distributions (for OptunaSearch(space=...) or study.enqueue checks)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for name, value in self._items().items():
            if not isinstance(value, tuple):
                continue
            if name == "period":
                out[name] = IntDistribution(value[0], value[1], log=self.period_log)
            elif all(isinstance(v, str) for v in value):
                out[name] = CategoricalDistribution(list(value))
            else:
                out[name] = FloatDistribution(*value)
        return out


# ------------------------------------------------------------------------------------ reading back
def merge_spaces(*spaces: Mapping) -> dict:
    """One ``param_space`` from several (the user's and ``ChexSpace.ray()``); a key in two of them is an error."""
    merged: dict = {}
    for space in spaces:
        if not isinstance(space, Mapping):
            raise ValueError(f"a search space is a dict of names to distributions or values, "
                             f"got {type(space).__name__}")
        collide = sorted(set(merged) & set(space))
        if collide:
            raise ValueError(f"search space key(s) {collide} are in two of the merged spaces (yours and chex-tune's "
                             f"CHEX parameters; chex-tune's use {', '.join(RESERVED_KEYS)} and the CHEX setting "
                             "names); "
                             "rename your key(s)")
        merged.update(space)
    return merged


def chex_values(config: Mapping) -> dict:
    """The CHEX values a trial config holds: ``chex_fixed`` then the names in ``chex_searched``.

    A config without those constants (a plain dict of settings) is read whole.
    """
    if isinstance(config, ChexConfig):
        return config.to_dict()
    if not isinstance(config, Mapping):
        raise ValueError(f"CHEX settings must be a dict (a trial's config) or a ChexConfig, "
                         f"got {type(config).__name__}")
    if FIXED_KEY not in config and SEARCHED_KEY not in config:
        others = sorted(set(config) - set(chex_fields()) - {REGROW_FRACTION})
        if others:
            raise ValueError(f"the config has no {FIXED_KEY}/{SEARCHED_KEY} entries (ChexSpace.ray() and .suggest() "
                             f"add them), so all of it is read as CHEX settings, and {others} are not CHEX settings "
                             f"(allowed: {', '.join(chex_fields())}); build the space with ChexSpace or pass only "
                             "CHEX settings")
        return dict(config)
    searched = list(config.get(SEARCHED_KEY) or ())
    missing = [name for name in searched if name not in config]
    if missing:
        raise ValueError(f"the trial config lacks the searched CHEX setting(s) {missing} that {SEARCHED_KEY} lists")
    return {**dict(config.get(FIXED_KEY) or {}), **{name: config[name] for name in searched}}


def resolve_chex_settings(values: Mapping | ChexConfig) -> ChexConfig:
    """A validated ChexConfig from CHEX values, turning ``regrow_fraction`` into ``regrow_ratio``.

    Unknown names are rejected by name. With a MACs budget and no allocator given, the engine's default
    allocator is used if it takes a MACs budget, else the first registered one that does.
    """
    values = chex_values(values)
    values = {k: v for k, v in values.items() if k not in RESERVED_KEYS}
    fields = set(chex_fields())
    if REGROW_FRACTION in values and REGROW_FRACTION not in fields:
        fraction = values.pop(REGROW_FRACTION)
        if "regrow_ratio" in values:
            raise ValueError(f"give regrow_ratio or {REGROW_FRACTION}, not both")
        if not (_is_number(fraction) and 0 <= fraction <= 1):
            raise ValueError(f"{REGROW_FRACTION} must be in [0, 1], got {fraction!r}")
        values["regrow_ratio"] = fraction * channel_sparsity(values)
    if values.get("macs_target") is not None and "allocator" not in values:
        values["allocator"] = _allocator_for_macs_budget(values["macs_target"])
    return ChexConfig.from_dict(values)


def channel_sparsity(values: Mapping) -> float:
    """The budget as a fraction of channels removed: ``sparsity``, or about ``1 - sqrt(macs_target)`` for a
    MACs budget (a conv's MACs scale with its input times its output channels)."""
    if values.get("macs_target") is not None:
        return 1.0 - math.sqrt(values["macs_target"])
    default = next(f.default for f in dataclasses.fields(ChexConfig) if f.name == "sparsity")
    return values.get("sparsity", default)


def _allocator_for_macs_budget(macs_target: float) -> str:
    default = next(f.default for f in dataclasses.fields(ChexConfig) if f.name == "allocator")
    for name in (default, *_registry("allocator")):
        try:
            ChexConfig(macs_target=macs_target, allocator=name)
        except ValueError:
            continue
        return name
    raise ValueError(f"no registered allocator takes a MACs budget (tried {', '.join(_registry('allocator'))})")


def searched_names(config: Mapping) -> list[str]:
    return list(config.get(SEARCHED_KEY) or ()) if isinstance(config, Mapping) else []


def trial_params(config: Mapping) -> dict:
    """A trial's settings as flat MLflow params: the user's own keys (nested dicts as ``a/b``) and every CHEX
    setting resolved (defaults too; the built-in trainable's config gives every RunConfig setting). A CHEX
    setting whose name the user's config also has is logged as ``chex.<name>``."""
    from chex_tune.config import RunConfig

    own = _flatten({k: v for k, v in config.items() if k not in RESERVED_KEYS and k not in searched_names(config)})
    if FIXED_KEY not in config and SEARCHED_KEY not in config:
        return own
    values = chex_values(config)
    chex_only = set(values) <= set(chex_fields()) | {REGROW_FRACTION}
    settings = resolve_chex_settings(values).to_dict() if chex_only else RunConfig.from_dict(values).to_dict()
    if REGROW_FRACTION in values:
        settings[REGROW_FRACTION] = values[REGROW_FRACTION]
    # A user's own key of the same name (their data seed, say) keeps the plain name; the CHEX one is prefixed.
    return {**own, **{f"chex.{k}" if k in own else k: v for k, v in settings.items()}}


def _flatten(values: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out
