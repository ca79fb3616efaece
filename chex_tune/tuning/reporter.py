"""CHEX inside a user's own training loop: one object that prunes, regrows, reports and compacts.

    def train_fn(config):                              # a Ray Tune trainable, an Optuna objective, a script
        model, optimizer = MyNet(width=32), torch.optim.SGD(...)
        chex = ChexReporter(model, example_batch, config, total=epochs * len(loader), optimizer=optimizer,
                            builder="my_models:MyNet", builder_kwargs={"width": 32})
        for epoch in range(epochs):
            for x, y in loader:
                ...; optimizer.step()
                chex.step()                            # masks re-applied; prune-regrow when the schedule says so
            chex.report(val_loss=..., val_acc=...)     # + macs, params, sparsity; to Ray / Optuna / nowhere
        result = chex.finish()                         # compact model, compact.pt, widths.json: the trial's result

Where reports go: to Ray Tune when called inside a Ray trial (``tune.report``; the final one carries
the trial's files as its checkpoint), to the Optuna trial given as ``trial=`` (the final metrics and
the files' directory as user attributes; with ``monitor=`` a single-objective study can stop the
trial early), or nowhere. The files: ``compact.pt`` (``chex_tune.load_compact``; rebuilt from the
builder reference, never unpickled), ``widths.json``, ``metrics.json`` (final metrics and per-epoch
history) and ``chex.yaml`` (the CHEX settings and the builder), written by ``chex_tune.train.artifacts`` as the
built-in loop writes its own.

The model trains masked to the end (masked channels are zero after every optimizer step, so it
computes exactly what the compact model computes); ``finish`` builds the physically smaller copy.
"""

from __future__ import annotations

import copy
import logging
import pathlib
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from chex_tune.config import ChexConfig
from chex_tune.core.builders import recipe_args
from chex_tune.core.compact import make_recipe
from chex_tune.core.explorer import ChannelExplorer
from chex_tune.core.flops import count_macs, count_params
from chex_tune.train.artifacts import COMPACT, write_trial
from chex_tune.train.metrics import DENSE_MACS, EPOCH, LATENCY_MS, MACS, SPARSITY, cost_metrics, final_costs
from chex_tune.train.weights import budget_of_start
from chex_tune.tuning.finish import TrialEnd, finish_trial
from chex_tune.tuning.objectives import missing_objectives, parse_objectives
from chex_tune.tuning.protocol import OPTUNA_ATTR, searched_names, settings_in
from chex_tune.tuning.session import in_ray_trial, in_train_worker, trial_location, world_rank
from chex_tune.tuning.session import report as report_to_trial
from chex_tune.tuning.settings import REGROW_FRACTION, resolve_chex_settings
from chex_tune.units import format_count

logger = logging.getLogger(__name__)


@dataclass
class ChexResult:
    """What ``ChexReporter.finish`` produces: final metrics, the compact model and the directory of its files."""

    metrics: dict
    model: nn.Module
    path: pathlib.Path
    settings: dict
    history: list[dict] = field(default_factory=list)

    def values(self, objectives) -> tuple[float, ...]:
        """The objectives' values in order (what an Optuna objective returns); a missing one is an error naming it."""
        objectives = parse_objectives(objectives)
        missing = missing_objectives(self.metrics, objectives)
        if missing:
            raise ValueError(f"objective(s) {missing} were never reported; reported metrics: "
                             f"{', '.join(sorted(self.metrics))}")
        return tuple(float(self.metrics[o.name]) for o in objectives)


def _numbers(metrics: Mapping) -> dict:
    """Numeric values only (tensors become floats); other values are dropped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = value
    return out


class ChexReporter:
    """CHEX bookkeeping for one trial of a user's own loop. See the module docstring for the call pattern.

    Arguments: ``model`` (any nn.Module the engine can trace) and ``example_inputs`` (a batch or a tuple of
    inputs); ``config``: the trial's config (CHEX settings read as ``ChexSpace`` wrote them), a dict of
    CHEX settings or a ``ChexConfig`` (None: the defaults); ``total``: schedule length in the config's
    unit (optimizer steps, or epochs with ``unit="epoch"``); ``optimizer``: masks are re-applied after
    each of its steps; ``builder``/``builder_kwargs``: how the dense model is rebuilt to load the compact
    one (``"package.module:function"`` or the function itself; timm models need none); ``trial``: an
    Optuna trial to report to; ``monitor``: the metric a single-objective Optuna study may stop on;
    ``out_dir``: where the files go (default: the Ray trial's directory, else a new temporary directory);
    ``ignore``: layers whose output channels stay; ``graph_timeout_s``: how long finding the channel groups
    may take before the model stays dense (with a warning, also logged on the trial's run as ``chex_warning``);
    ``latency_model``: a latency table of the deployment target (``chex_tune.train.latency.table_for``), needed by a
    ``latency_target`` budget; with one, every report carries the predicted ``latency_ms``.

    ``model`` may be a compact model (``load_compact``, or ``parent_model(config)`` in an inheriting sweep or a
    family): it is compressed further, its MACs budget stays a fraction of the dense model its recipe names, and
    ``macs_ratio`` and ``dense_macs`` are that dense model's (its builder comes from its recipe).
    """

    def __init__(self, model: nn.Module, example_inputs, config: Mapping | ChexConfig | None = None, *,
                 total: int, optimizer: torch.optim.Optimizer | None = None, builder=None,
                 builder_kwargs: Mapping | None = None, trial=None, monitor: str | None = None,
                 out_dir: str | pathlib.Path | None = None, ignore: Sequence[str] = (),
                 graph_timeout_s: float | None = 120.0, latency_model=None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"ChexReporter needs an nn.Module, got {type(model).__name__}")
        if not isinstance(total, int) or isinstance(total, bool) or total < 1:
            raise ValueError(f"total must be a positive integer (optimizer steps, or epochs with unit='epoch'), "
                             f"got {total!r}")
        self.settings = resolve_chex_settings(config if config is not None else ChexConfig())
        self.values = settings_in(config) if isinstance(config, Mapping) else {}
        self.searched = searched_names(config) if isinstance(config, Mapping) else []
        self.model = model
        self.example_inputs = example_inputs
        self.trial = trial
        self.monitor = monitor
        self.ray = in_ray_trial() or in_train_worker()
        self.history: list[dict] = []
        self.last: dict = {}
        self.result: ChexResult | None = None
        self._out_dir = pathlib.Path(out_dir) if out_dir is not None else None
        self._check_monitor()

        self.recipe_args: dict = {}  # the explorer's (and a dense model's recipe's) builder arguments
        if builder is not None or builder_kwargs:
            self.recipe_args = recipe_args(model, builder=builder, builder_kwargs=builder_kwargs)
        elif getattr(model, "chex_recipe", None) is None and \
                not (getattr(model, "pretrained_cfg", None) or {}).get("architecture"):
            raise ValueError(f"ChexReporter needs builder= for a {type(model).__name__} (a 'package.module:function' "
                             "that builds this model, plus builder_kwargs) so the compact model can be saved and "
                             "loaded without pickle; timm models need none")
        self.explorer: ChannelExplorer | None = None
        self.warnings: list[str] = []  # what the engine warned about this model (e.g. it stays dense), for the run
        dense = dense_costs(model, example_inputs)  # a compact start: its dense model's (macs, params)
        if not self.settings.dense:
            budget = self.settings if dense is None else budget_of_start(
                self.settings, model, example_inputs, dense[0], "the start model (a compact model)")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.explorer = ChannelExplorer.from_config(model, example_inputs, budget, total=total,
                                                            optimizer=optimizer, ignore=tuple(ignore),
                                                            graph_timeout_s=graph_timeout_s,
                                                            latency_model=latency_model, **self.recipe_args)
            for warning in caught:  # shown as they would have been, and kept
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
                if issubclass(warning.category, UserWarning):
                    self.warnings.append(str(warning.message))
            self.dense_macs, self.dense_params = self.explorer.dense_macs(), self.explorer.dense_params()
        else:
            self.dense_macs, self.dense_params = count_macs(model, example_inputs), count_params(model)
        if dense is not None:
            self.dense_macs, self.dense_params = dense

    def _check_monitor(self) -> None:
        if self.monitor is None:
            return
        if self.trial is None:
            raise ValueError("monitor= stops an Optuna trial early: pass trial= too")
        if len(self.trial.study.directions) > 1:
            raise ValueError(f"monitor={self.monitor!r}: Optuna cannot stop trials of a multi-objective study early "
                             "(trial.report is single-objective only); drop monitor=")

    # ------------------------------------------------------------------------------ in the loop
    def step(self) -> bool:
        """Call after every optimizer step (or once per epoch with unit="epoch"); True when it explored."""
        if self.result is not None:
            raise RuntimeError("ChexReporter.step() after finish()")
        return self.explorer.step() if self.explorer is not None else False

    def cost(self) -> dict:
        """MACs (per sample), params and channel sparsity of the current masked model; with a MACs budget also
        ``macs_budget``, what the compact model will cost (early stopping ranks trials on it)."""
        if self.explorer is None:
            return cost_metrics(macs=self.dense_macs, params=self.dense_params, sparsity=0.0)
        dense_ms = self.explorer.dense_latency_ms()
        return cost_metrics(macs=self.explorer.macs(), params=self.explorer.params(),
                            sparsity=self.explorer.sparsity(), macs_budget=self.settings.macs_budget(self.dense_macs),
                            latency_ms=self.explorer.latency_ms(),
                            latency_budget_ms=None if dense_ms is None else self.settings.latency_budget(dense_ms))

    def report(self, metrics: Mapping | None = None, /, *, epoch: int | None = None, **more) -> dict:
        """Report the user's metrics with ``macs``, ``params``, ``sparsity`` and ``epoch``; returns what was sent."""
        if self.result is not None:
            raise RuntimeError("ChexReporter.report() after finish(): the final report has been sent")
        values = _numbers({**(metrics or {}), **more})
        self.last.update(values)
        epoch = len(self.history) + 1 if epoch is None else int(epoch)
        report = {**values, **self.cost(), EPOCH: epoch}
        self.history.append(report)
        if self.ray:
            report_to_trial(report)
        if self.trial is not None and self.monitor is not None:
            self._optuna_step(report, epoch)
        return report

    def _optuna_step(self, report: dict, epoch: int) -> None:
        import optuna

        if self.monitor not in report:
            raise ValueError(f"monitor {self.monitor!r} is not among the reported metrics "
                             f"({', '.join(sorted(report))})")
        self.trial.report(float(report[self.monitor]), step=epoch)
        if self.trial.should_prune():  # Optuna's word; this trial is stopped early
            raise optuna.TrialPruned(f"stopped at epoch {epoch}: {self.monitor} {report[self.monitor]:.4g}")

    # ------------------------------------------------------------------------------------ the end
    def compact(self) -> nn.Module:
        """The physically smaller model (a new module, in eval mode); the trained one is left as it is."""
        if self.result is not None:
            return self.result.model
        if self.explorer is not None:
            small = self.explorer.compact()
        else:
            small = copy.deepcopy(self.model)
            shape = tuple(_first(self.example_inputs).shape)
            small.chex_recipe = make_recipe(self.model, {}, shape, **({"builder": None, "model_name": None,
                                                                      "model_kwargs": None} | self.recipe_args))
        return small.eval()

    def finish(self, metrics: Mapping | None = None, /, **more) -> ChexResult:
        """Compact, write the files and send the final report (the user's last metrics, updated by these)."""
        if self.result is not None:
            raise RuntimeError("ChexReporter.finish() was already called")
        latency = {LATENCY_MS: self.explorer.latency_ms()} if self.explorer is not None and \
            self.explorer.latency_model is not None else {}  # of the final masks, before compaction
        small = self.compact()
        widths = self.explorer.groups_summary if self.explorer is not None else []
        sparsity = self.explorer.sparsity() if self.explorer is not None else 0.0
        if self.explorer is not None:
            self.explorer.remove_hooks()
        device = next((p.device for p in small.parameters()), torch.device("cpu"))
        inputs = tuple(t.to(device) for t in _as_tuple(self.example_inputs))
        final = {**self.last, **_numbers({**(metrics or {}), **more}), SPARSITY: sparsity,
                 **final_costs(small, inputs, dense_macs=self.dense_macs, dense_params=self.dense_params),
                 **latency, EPOCH: self.history[-1][EPOCH] if self.history else 0}
        out, temporary = self._directory()
        settings = {**self.settings.to_dict(), **{k: v for k, v in self.values.items() if k == REGROW_FRACTION}}
        write_trial(out, small, widths=widths, metrics=final, history=self.history, chex=settings,
                    searched=self.searched)
        self.result = ChexResult(final, small, out, settings, self.history)
        params = {"builder": small.chex_recipe["model_name"]}
        if self.warnings:
            params["chex_warning"] = " | ".join(self.warnings)[:500]
        if self.ray:
            params.update(trial_location())
            files = out if not in_train_worker() or world_rank() == 0 else None  # rank 0's files are the trial's
            finish_trial(TrialEnd(final, params, files))
        if self.trial is not None:
            self.trial.set_user_attr(OPTUNA_ATTR, {"metrics": final, "artifacts": str(out), "temporary": temporary,
                                                   "settings": settings, "params": params})
        logger.info("compact model: %s (%s MACs of %s dense)", out / COMPACT, format_count(final[MACS]),
                    format_count(final[DENSE_MACS]))
        return self.result

    def _directory(self) -> tuple[pathlib.Path, bool]:
        if self._out_dir is not None:
            return self._out_dir, False
        if self.ray and not in_train_worker():
            from ray import tune

            return pathlib.Path(tune.get_context().get_trial_dir()) / "chex", False
        return pathlib.Path(tempfile.mkdtemp(prefix="chex-trial-")), True


def dense_costs(model: nn.Module, example_inputs) -> tuple[int, int] | None:
    """MACs and params of the dense model a compact ``model`` was cut from (rebuilt from its recipe), or None for a
    model that is not compact."""
    recipe = getattr(model, "chex_recipe", None)
    if recipe is None:
        return None
    from chex_tune.core.compact import build_dense

    dense = build_dense(recipe).eval().to(_first(example_inputs).device)
    return count_macs(dense, example_inputs), count_params(dense)


def _as_tuple(example_inputs) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _first(example_inputs):
    return _as_tuple(example_inputs)[0]
