"""Sweeps: Ray Tune runs the trials, Optuna proposes them (any objectives), MLflow records them.

    result = run_sweep(SearchSpace.load("fashion_mnist_resnet18"), SweepOptions(trials=8))   # the built-in loop
    result = run_sweep(train_fn, SweepOptions(trials=8), param_space={"lr": tune.loguniform(1e-3, 0.1)},
                       chex_space=ChexSpace(), objectives="val_acc:max,macs:min")              # your trainable
    print(result)                                                                              # the front first

``run_sweep`` takes any Ray Tune trainable (usually a function that trains with a ``ChexReporter``) or a
``SearchSpace`` (chex-tune's own training loop on its settings): both take the same path. What every sweep
gets: one MLflow parent run and a child run per trial (``track/``), Optuna's multi-objective proposals stored
in ``optuna.db``, Ray's experiment state under ``ray/`` (``resume.py`` continues from it), failures isolated to
their trial, progress through ``logging``, and the Pareto tags at the end. Ray is started only when it is not
running already, and shut down only when this call started it. Only this process writes to MLflow and Optuna;
trials report to it through Ray. This module makes the sweep's ``Plan``; ``driver.run_plan`` runs it (as it runs a
family's).
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable, Mapping

from chex_tune.train.metrics import BUILTIN_OBJECTIVES
from chex_tune.tuning.driver import Plan, SweepResult, run_plan
from chex_tune.tuning.lineage import Lineage, check_inheritance, ladder_points
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, parse_objectives
from chex_tune.tuning.options import SweepOptions
from chex_tune.tuning.protocol import FIXED_KEY
from chex_tune.tuning.reference import MaxDrop
from chex_tune.tuning.space import SearchSpace, domain_keys, merge_spaces
from chex_tune.tuning.workers import on_workers

__all__ = ["SweepOptions", "SweepResult", "run_sweep", "run_space_sweep"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ the entry point
def run_sweep(trainable, options: SweepOptions | None = None, *, param_space: Mapping | None = None,
              chex_space: SearchSpace | None = None, objectives=None, initial_points: list[dict] | None = None,
              log: Callable[[str], None] | None = None) -> SweepResult:
    """A multi-objective sweep of ``trainable`` (any Ray Tune trainable, or a ``SearchSpace`` for the built-in loop).

    param_space: your own Ray Tune entries; chex_space: the CHEX settings to search (``ChexSpace(...)``);
    objectives: any metrics the trainable reports, each with a direction (``"val_map:max,macs:min"``; default
    ``options.objectives``, else the space's, else ``val_acc:max,macs:min``); initial_points: configurations
    Optuna tries first; log: where progress lines go (default: ``logging``, logger ``chex_tune.tuning.sweep``).
    A trial that misses an objective fails alone; when the first trial to finish misses one, the sweep stops with
    an error naming it and what the trial did report.
    """
    options = options or SweepOptions()
    log = log or logger.info
    plan = (_builtin_plan(trainable, options, objectives) if isinstance(trainable, SearchSpace) else
            _user_plan(trainable, options, param_space, chex_space, objectives, initial_points))
    result = run_plan(plan, options, log)
    log(f"\n{result}")
    return result


def run_space_sweep(space: SearchSpace, options: SweepOptions | None = None, *, log=None) -> SweepResult:
    """``run_sweep`` of the built-in loop on ``space`` (the name the CLI and earlier releases use)."""
    return run_sweep(space, options, log=log)


def _user_plan(trainable, options, param_space, chex_space, objectives, initial_points) -> Plan:
    if not callable(trainable):
        raise ValueError(f"trainable must be a Ray Tune trainable (a function taking the trial's config, or a "
                         f"Trainable class) or a SearchSpace, got {type(trainable).__name__}")
    if options.init is not None:
        raise ValueError("--init is the built-in loop's trained start; your trainable loads its own weights before "
                         "ChexReporter (see the README's trained start)")
    if options.max_drop is not None:
        raise ValueError(f"--max-drop {options.max_drop:g} needs the dense model's val accuracy, which chex-tune reads "
                         "from the built-in loop's --init; for your trainable, leave --max-drop out and filter the "
                         "front by val_acc")
    if options.ladder:
        raise ValueError("--ladder is the built-in loop's: for your trainable, give the first trials as "
                         "initial_points= (large budgets first, so that with inherit=True they seed the later ones)")
    if options.inherit and (chex_space is None or ("macs_target" not in chex_space.params
                                                   and chex_space.fixed.get("macs_target") is None)):
        raise ValueError("inherit=True needs a MACs budget in chex_space (ChexSpace(macs_target=...)): a parent is a "
                         "finished trial with more MACs than its child's budget; the trial loads it with "
                         "parent_model(config)")
    if chex_space is not None and chex_space.non_chex_settings():
        raise ValueError(f"chex_space sets {chex_space.non_chex_settings()}, which are not CHEX settings: your "
                         "trainable reads CHEX settings only from it; put your own settings in param_space")
    space = merge_spaces(param_space or {}, chex_space.ray() if chex_space is not None else {})
    name = getattr(trainable, "__name__", type(trainable).__name__)
    workers = options.workers_per_trial or 1
    objectives = parse_objectives(objectives or options.objectives or DEFAULT_OBJECTIVES)
    accuracy = next((o.name for o in objectives if o.mode == "max"), None)
    if options.inherit and accuracy is None:
        raise ValueError(f"inherit=True ranks parents on a maximised objective (an accuracy); objectives "
                         f"{', '.join(map(str, objectives))} have none")
    lineage = Lineage(space.get(FIXED_KEY), accuracy=accuracy) if options.inherit and not options.resume else None
    return Plan(on_workers(trainable) if workers > 1 else trainable, space, objectives,
                searched=domain_keys(space), experiment=options.experiment or name, lineage=lineage,
                tags={"chex.trainable": f"{getattr(trainable, '__module__', '?')}."
                                        f"{getattr(trainable, '__qualname__', name)}"},
                initial_points=initial_points, workers=workers)


def _builtin_plan(space: SearchSpace, options: SweepOptions, objectives) -> Plan:
    from chex_tune.tuning.track.runs import resolve_init
    from chex_tune.tuning.trainable import builtin_constants, run_trial

    objectives = objectives or options.objectives
    init = options.init or space.fixed.get("init")
    if init:
        warn_from_scratch_schedule(space)
    if options.inherit:
        check_inheritance(space, init)
    if options.max_drop is not None and not init:
        raise ValueError(f"--max-drop {options.max_drop:g} needs a dense reference: give --init WEIGHTS (the trained "
                         "dense model, evaluated once before the trials start); a sweep from scratch has none")
    ladder = ladder_points(space, options.ladder) if options.ladder else None
    # the sweep's overrides of the space's run settings: the run's config (TrainConfig) is where they live
    overrides = {name: getattr(options, name) for name in ("epochs", "workers_per_trial")
                 if getattr(options, name) is not None}
    centre = space.run_config(space.midpoint(), **overrides, init=init).train
    centre.check_teacher()  # distillation without a trained start: refused before anything starts
    workers = centre.workers_per_trial
    constants = {} if options.resume else builtin_constants(
        space, overrides, device=options.device, threads=int(options.cpus()),
        init=resolve_init(init, store=options.store, tracking_uri=options.tracking_uri) if init else None)
    trainable = on_workers(run_trial) if workers > 1 else run_trial  # as a user's trainable on several workers
    max_drop = None
    if options.max_drop is not None and not options.resume:  # resumed: the searcher and parent run keep it
        from chex_tune.train.metrics import VAL_ACC
        from chex_tune.tuning.reference import dense_reference

        fixed = constants[FIXED_KEY]
        max_drop = MaxDrop(options.max_drop, dense_reference(fixed, fixed["init"])[VAL_ACC])
    lineage = Lineage(constants.get(FIXED_KEY), max_drop=max_drop) if options.inherit and not options.resume else None
    return Plan(trainable, constants, parse_objectives(objectives, allowed=BUILTIN_OBJECTIVES) if objectives
                else space.objectives, searched=list(space.searched), tags={"chex.space": str(space.source)},
                experiment=options.experiment or pathlib.Path(space.source).stem,
                optuna_space=None if options.resume else space.optuna_distributions(), space_file=space.to_dict(),
                epochs=centre.epochs, workers=workers, initial_points=ladder, max_drop=max_drop, lineage=lineage)


def warn_from_scratch_schedule(space: SearchSpace) -> None:
    """A trained start in a space whose fixed schedule is a from-scratch one: a space's fixed settings win over the
    fine-tune defaults (FINETUNE), which a user may not know; a from-scratch rate erases much of the training."""
    from chex_tune.config import FINETUNE

    lr = space.fixed.get("lr")
    if isinstance(lr, (int, float)) and lr > 2.5 * FINETUNE["lr"]:
        logger.warning("trials fork from trained weights, but this space fixes lr %s (the fine-tune default is %s, "
                       "measured in benchmarks/front.md): a from-scratch rate undoes much of the training. For a "
                       "fine-tune, use a space made for it (fashion_mnist_resnet18_finetune) or fix a smaller lr",
                       lr, FINETUNE["lr"])


