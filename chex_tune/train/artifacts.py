"""A trial's files: the one writer and reader, for the built-in loop and a user's ``ChexReporter`` alike.

    compact.pt    the compact model (``chex_tune.load_compact``: rebuilt from its recipe, never unpickled)
    widths.json   kept and original channels of every group
    metrics.json  the final metrics and the per-epoch ``history``
    chex.yaml     what made the model: the CHEX settings, the searched names, the input shape, the builder
    config.yaml   the built-in loop's whole run configuration (model, dataset, ...): what ``export`` scores on

Every trial writes the first four; the built-in loop adds ``config.yaml``, since a user's own loop has no
chex-tune dataset to name. Readers ask this module what a trial holds (``dataset_settings``), never which
loop ran it. Stores written before ``chex.yaml`` was common to both keep working: every reader takes what is
there.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping

import yaml
from torch import nn

from chex_tune.core._atomic import atomic_write_text
from chex_tune.core.budgets import BUDGETS
from chex_tune.core.compact import save_compact
from chex_tune.train.metrics import MACS_RATIO

COMPACT = "compact.pt"
WIDTHS = "widths.json"
METRICS = "metrics.json"
SETTINGS = "chex.yaml"
RUN_CONFIG = "config.yaml"
FILES = (COMPACT, WIDTHS, METRICS, SETTINGS)  # every finished trial's; the built-in loop's add RUN_CONFIG
HISTORY = "history"  # in metrics.json: one entry per epoch
LINEAGE = "lineage"  # in metrics.json: {"dataset": {name, digest, sizes, source}, "init_digest": ...}


def write_trial(out: str | pathlib.Path, model: nn.Module, *, widths: list[dict], metrics: Mapping,
                history: list[dict], chex: Mapping, searched=(), run_config: Mapping | None = None) -> pathlib.Path:
    """Write a finished trial's files into ``out``; returns ``out``.

    ``model``: the compact model (its ``chex_recipe`` names the builder); ``chex``: the CHEX settings it was made
    with; ``searched``: the names a search sampled; ``run_config``: the built-in loop's whole configuration
    (``config.yaml``), None for a user's own loop. Non-finite final metrics are refused: a NaN accuracy must not
    become a front member (``macs_ratio`` is NaN for a model without MACs, which is no failure).
    """
    bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v) and k != MACS_RATIO)
    if bad:
        raise FloatingPointError(f"non-finite final metric(s) {bad}: {dict(metrics)}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_compact(model, out / COMPACT)
    atomic_write_text(json.dumps(widths, indent=1), out / WIDTHS)
    atomic_write_text(json.dumps({**metrics, HISTORY: history}, indent=1), out / METRICS)
    recipe = model.chex_recipe
    settings = {"chex": dict(chex), "searched": list(searched), "input_shape": list(recipe["input_shape"]),
                "builder": recipe["model_name"], "builder_kwargs": dict(recipe["model_kwargs"])}
    atomic_write_text(yaml.safe_dump(settings, sort_keys=False), out / SETTINGS)
    if run_config is not None:
        atomic_write_text(yaml.safe_dump(without_unused_budgets(run_config), sort_keys=False), out / RUN_CONFIG)
    return out


CHANNEL_TARGET = "sparsity"  # the default (channel) budget's target, which the kinds with a setting replace


def without_unused_budgets(run_config: Mapping) -> dict:
    """``run_config`` without the targets of the budgets it does not use: with a ``macs_target`` or
    ``latency_target`` set, ``sparsity`` and the other kinds' (unset) targets say nothing about the run. What is
    left still rebuilds the run (``RunConfig.from_dict``): a dropped target goes back to its default, unused."""
    settings = [kind.setting for kind in BUDGETS.values() if kind.setting is not None]
    chosen = [name for name in settings if run_config.get(name) is not None]
    if not chosen:
        return dict(run_config)
    unused = {CHANNEL_TARGET, *settings} - set(chosen)
    return {key: value for key, value in run_config.items() if key not in unused}


def is_complete(directory: str | pathlib.Path | None) -> bool:
    """Whether ``directory`` holds a finished trial: its compact model, at least."""
    return directory is not None and (pathlib.Path(directory) / COMPACT).exists()


def read_metrics(directory: str | pathlib.Path | None) -> dict:
    """``metrics.json`` (final metrics and ``history``), or {} when the trial wrote none."""
    path = pathlib.Path(directory) / METRICS if directory is not None else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def read_history(directory: str | pathlib.Path | None) -> list[dict]:
    return list(read_metrics(directory).get(HISTORY, []))


def dataset_settings(run_config_text: str | None) -> dict | None:
    """The run configuration in a trial's ``config.yaml`` text (it names the dataset to score an export on), or
    None for a trial of a user's own loop."""
    return None if run_config_text is None else yaml.safe_load(run_config_text)
