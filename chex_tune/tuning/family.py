"""A family: one compact model per budget from one trained model, run as a sweep on Ray Tune.

    result = run_family({...settings...}, levels=(0.5, 0.25, 0.12, 0.06, 0.03), init="dense.pt")
    result = run_family({...}, init="dense.pt", workers_per_trial=2, gpus_per_worker=1, ray_address="auto")
    result = run_family(my_trainable, levels=(0.5, 0.25), chex_space=ChexSpace(lr=...), param_space={"epochs": 2})

A family of a user's own trainable (a function training with ``ChexReporter``) hands each member its parent's
compact model through its config: ``parent_model(config)`` (None for the first: the user's own trained model).

Shapes (``shape``): ``cascade`` fine-tunes each member from the previous one (the first from the trained model),
so the smaller members inherit the larger ones' training and every fine-tune runs on an ever smaller model;
``independent`` fine-tunes every member from the trained model itself, several at a time. Without ``init`` the dense
model is trained first (its run is a member too: the front's dense point). The members are trials of one sweep,
through the sweep's driver (``driver.run_plan``): one MLflow parent run with a child run per member (tag
``chex.member``, its parent member as ``chex.parent_run``), Ray's placement (``gpus_per_trial``,
``workers_per_trial``, ``ray_address``), its fault handling and ``resume`` (a killed family continues after its
last finished member). ``family_searcher.FamilySearcher`` decides which member runs next and from what.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Callable

from chex_tune.config import PRESETS, RunConfig
from chex_tune.train.artifacts import COMPACT
from chex_tune.train.metrics import MACS_RATIO, TEST_ACC, VAL_ACC
from chex_tune.tuning.family_searcher import DENSE, FamilySearcher, member_name, stop_line
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, parse_objectives
from chex_tune.tuning.options import DEFAULT_LEVELS, FAMILY_OPTIONS, SHAPES, SweepOptions
from chex_tune.tuning.protocol import FIXED_KEY, SEARCHED_KEY, THREADS_KEY
from chex_tune.tuning.reference import MaxDrop, check_max_drop, dense_reference

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class FamilyResult:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    members: list[dict]  # key (member name), run_id, path (its compact.pt), and its final metrics; in run order
    rows: list  # the family's trial rows, ranked (rank 0: its front)
    reference: dict | None = None  # with a trained start: its own metrics (no member trains it), for comparison
    max_drop: MaxDrop | None = None  # --max-drop: its points and the dense val_acc the members were measured against
    stopped_at: str | None = None  # --max-drop: the member beyond it (recorded, off the front); no smaller level ran
    not_trained: tuple[float, ...] = ()  # the levels below it
    interrupted: bool = False

    def __str__(self) -> str:
        from chex_tune.tuning.tables import reference_line, trials_table

        text = f"family {self.experiment!r} (parent run {self.parent_run_id})\n" + trials_table(
            self.rows, parse_objectives(DEFAULT_OBJECTIVES))
        if self.reference is not None:
            text += "\n" + reference_line(REFERENCE_LABEL, self.reference)
        if self.stopped_at is not None:
            member = next(m for m in self.members if m["key"] == self.stopped_at)
            text += "\n" + stop_line(self.stopped_at, member[VAL_ACC], self.max_drop, self.not_trained)
        return text


REFERENCE_LABEL = "reference, the --init model as given (evaluated once, not a member)"


def run_family(settings, *, levels=DEFAULT_LEVELS, init: str | None = None, shape: str = "cascade",
               dense_epochs: int | None = None, max_drop: float | None = None,
               log: Callable[[str], None] | None = None, param_space: dict | None = None, chex_space=None,
               objectives=None, **options) -> FamilyResult:
    """Compact members at ``levels`` (fractions of the dense MACs) of the model ``settings`` describe (flat RunConfig
    settings; a fine-tune's defaults fill what they leave out), from ``init`` (weights file or MLflow URI) or from a
    dense model trained first: the model and data settings, for ``dense_epochs`` (default: the from-scratch
    default) at the from-scratch learning rate.

    ``max_drop`` (percentage points): the family stops descending at the first member whose val_acc is more than
    that below the dense model's (``init`` evaluated once, else the dense member); that member is recorded, tagged
    ``chex.beyond_max_drop=true`` and left off the front, and the smaller levels are not trained.
    ``options``: the sweep options a family takes (``FAMILY_OPTIONS``: ``experiment`` (default "family"),
    ``store``, ``tracking_uri``, ``resume``, ``workers_per_trial``, ``gpus_per_trial``, ``ray_address``,
    ``concurrent`` (independent members at once), ...).

    ``settings`` may be a trainable of your own instead (``param_space``: its own fixed config entries;
    ``chex_space``: fixed CHEX settings, the fine-tune preset's by default; ``objectives``: what it reports): it
    loads its own trained model, and each member its parent's with ``parent_model(config)``."""
    from chex_tune.tuning.driver import run_plan
    from chex_tune.tuning.track.runs import resolve_init

    log = log or logger.info
    levels = _check(levels, shape)
    max_drop = check_max_drop(max_drop)
    if callable(settings):
        options = family_options(options, members=len(levels), shape=shape)
        plan = _user_plan(settings, levels, shape, param_space, chex_space, objectives, init, dense_epochs,
                          max_drop, options, log)
        return _result(run_plan(plan, options, log), levels, None)
    if param_space is not None or chex_space is not None or objectives is not None:
        raise ValueError("param_space, chex_space and objectives are for a family of your own trainable; the "
                         "built-in loop's family takes its settings as a dict")
    options = family_options(options, members=len(levels) + (init is None), shape=shape)
    RunConfig.from_dict({**settings, "macs_target": levels[0]}, preset="finetune")  # every setting, checked now
    start = reference = None  # without init: the dense member, the reference on the front itself
    if init is not None and not options.resume:  # read and checked before any run: bad weights leave nothing
        start = resolve_init(init, store=options.store, tracking_uri=options.tracking_uri)  # an MLflow URI: fetched
        settings, reference = _trained_start(settings, start, levels[0], log)
    plan = _plan(settings, levels, shape, init, start, reference, dense_epochs, max_drop, options, log)
    result = run_plan(plan, options, log)
    return _result(result, levels, reference)


def family_options(given: dict, *, members: int, shape: str) -> SweepOptions:
    """The sweep options of a family of ``members`` trials: a cascade runs one member at a time."""
    unknown = sorted(set(given) - set(FAMILY_OPTIONS))
    if unknown:
        raise ValueError(f"run_family got {unknown}, which a family does not take; its options: "
                         f"{', '.join(FAMILY_OPTIONS)} (and levels, init, shape, dense_epochs, max_drop, log)")
    if shape == "cascade":
        given = {**given, "concurrent": 1}  # each member starts from the one before
    return SweepOptions(**{"experiment": "family", **given, "trials": members})


def _plan(settings: dict, levels, shape: str, init, start, reference, dense_epochs, max_drop, options, log):
    """A family of the built-in loop: the fine-tune preset's settings and the given ones, from the trained start or
    from the dense member trained first."""
    from chex_tune.tuning.lineage import Lineage
    from chex_tune.tuning.trainable import run_trial

    fixed = {"device": options.device, **PRESETS["finetune"], **settings, **({"init": start} if start else {})}
    if fixed.get("data_dir"):  # members run in their own directories
        fixed["data_dir"] = str(pathlib.Path(fixed["data_dir"]).expanduser().resolve())
    workers = options.workers_per_trial or 1
    if workers > 1:
        fixed["workers_per_trial"] = workers
    dense = None if init is not None else _dense(fixed, dense_epochs)
    rule = MaxDrop(max_drop, reference[VAL_ACC]) if max_drop is not None and reference is not None else None
    return _members_plan(run_trial, {FIXED_KEY: fixed, THREADS_KEY: max(1, int(options.cpus()))},
                         parse_objectives(DEFAULT_OBJECTIVES), Lineage(), levels=levels, shape=shape,
                         options=options, log=log, tags={},
                         params={"init": init, "max_drop": max_drop,
                                 "dense_epochs": dense_epochs if init is None else None},
                         searcher_args={"dense": dense, "max_drop": max_drop,
                                        "reference": rule.reference if rule else None},
                         epochs=fixed.get("epochs"), max_drop=rule)


def _user_plan(trainable, levels, shape: str, param_space, chex_space, objectives, init, dense_epochs, max_drop,
               options, log):
    """A family of a user's trainable: fixed CHEX settings and the user's own fixed entries; each member's budget
    and parent come from the family's searcher."""
    from chex_tune.config import preset_chex
    from chex_tune.tuning.lineage import Lineage
    from chex_tune.tuning.space import domain_keys

    given = {"init": init, "dense_epochs": dense_epochs, "max_drop": max_drop}
    if any(value is not None for value in given.values()):
        raise ValueError(f"{', '.join(k for k, v in given.items() if v is not None)}: the built-in loop's; your "
                         "trainable loads its own trained model (the first member's start) and the others load "
                         "their parent's with parent_model(config)")
    if chex_space is not None and chex_space.params:
        raise ValueError(f"a family searches nothing: chex_space samples {sorted(chex_space.params)}; fix them "
                         "(ChexSpace(name=value)) or run a sweep")
    own = dict(param_space or {})
    sampled = domain_keys(own)
    if sampled:
        raise ValueError(f"a family searches nothing: param_space samples {sampled}; give fixed values")
    objectives = parse_objectives(objectives or options.objectives or DEFAULT_OBJECTIVES)
    accuracy = next((o.name for o in objectives if o.mode == "max"), VAL_ACC)
    fixed = {**preset_chex("finetune"), **(chex_space.fixed if chex_space is not None else {})}
    name = getattr(trainable, "__name__", type(trainable).__name__)
    return _members_plan(trainable, {**own, FIXED_KEY: fixed}, objectives, Lineage(accuracy=accuracy), levels=levels,
                         shape=shape, options=options, log=log, tags={"chex.trainable": name}, params={},
                         searcher_args={"accuracy": accuracy})


def _members_plan(trainable, space: dict, objectives, lineage, *, levels, shape: str, options, log, tags: dict,
                  params: dict, searcher_args: dict, **plan_args):
    """What every family's plan is: its members' budgets, handed out by the family's searcher, each member on a
    group of workers where asked, and the family ended when its rows say so."""
    from chex_tune.tuning.driver import Plan
    from chex_tune.tuning.workers import on_workers

    workers = options.workers_per_trial or 1

    def searcher(recorder) -> FamilySearcher:
        return FamilySearcher(levels, shape=shape, lineage=lineage, recorder=recorder, log=log, **searcher_args)

    return Plan(on_workers(trainable) if workers > 1 else trainable, {**space, SEARCHED_KEY: ["macs_target"]},
                objectives, searched=["macs_target"], experiment=options.experiment,
                tags={"chex.family": shape, **tags}, workers=workers, lineage=lineage, searcher=searcher,
                complete=_complete(shape),
                params={"levels": list(levels), "shape": shape, "trials": options.trials, **params}, **plan_args)


def _complete(shape: str):
    """Whether a family's rows say it ended: every member ended, or it stopped at a member (beyond --max-drop, or a
    failure later members needed)."""
    def complete(rows, trials: int) -> bool:
        ended = sum(row.status in ("FINISHED", "FAILED") for row in rows)
        return ended >= trials or any(row.beyond_max_drop or row.status == "FAILED" and
                                      (shape == "cascade" or row.member == DENSE) for row in rows)
    return complete


def _result(sweep, levels, reference) -> FamilyResult:
    """The family's result, read from its sweep's rows (so a resumed family reads as a whole one)."""
    from chex_tune.tuning.track.store import client_for

    rows = sorted((row for row in sweep.rows if row.member is not None), key=lambda row: row.number)
    members = [{"key": row.member, "run_id": row.run_id,
                "path": str(pathlib.Path(sweep.files[row.run_id]) / COMPACT) if row.run_id in sweep.files else None,
                **row.metrics} for row in rows]
    beyond = next((row.member for row in rows if row.beyond_max_drop), None)
    not_trained = tuple(level for level in levels if member_name(level) not in {row.member for row in rows})
    rule = MaxDrop.of_run(client_for(sweep.tracking_uri).get_run(sweep.parent_run_id))
    return FamilyResult(sweep.experiment, sweep.parent_run_id, sweep.tracking_uri, members, sweep.rows, reference,
                        rule, beyond, not_trained if beyond else (), sweep.interrupted)


def _trained_start(settings: dict, start: str, level: float, log) -> tuple[dict, dict]:
    """The settings fitted to the trained start (input channels, stem), checked against it, and the start evaluated
    once (the family's reference)."""
    from chex_tune.train.weights import check_init, fit_to_weights

    settings = fit_to_weights(settings, start)
    check_init(RunConfig.from_dict({**settings, "init": start, "macs_target": level}, preset="finetune"))
    reference = dense_reference(settings, start)
    log(f"the --init model: val_acc {reference[VAL_ACC]:.4f}, test_acc {reference[TEST_ACC]:.4f}, "
        f"MACs {reference[MACS_RATIO]:.3f} of dense")
    return settings, reference


def _dense(fixed: dict, epochs: int | None) -> dict:
    """Every setting of the dense run a family without a trained start begins with: the model and data settings,
    from scratch (they replace the members' shared settings in its trial, so all of them are given)."""
    from chex_tune.config import FINETUNE, ChexConfig

    chex = {f.name for f in dataclasses.fields(ChexConfig)} - {"seed"}
    kept = {k: v for k, v in fixed.items() if k not in FINETUNE and k not in chex and k not in ("distill", "init")}
    return RunConfig.from_dict({**kept, "sparsity": 0.0, **({"epochs": epochs} if epochs else {})}).to_dict()


def _check(levels, shape: str) -> tuple[float, ...]:
    if shape not in SHAPES:
        raise ValueError(f"unknown family shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    levels = tuple(sorted(set(levels), reverse=True))
    if not levels or not all(isinstance(v, (int, float)) and 0 < v < 1 for v in levels):
        raise ValueError(f"--levels must be fractions of the dense MACs in (0, 1), like 0.5 0.25 0.12, got {levels}")
    return levels
