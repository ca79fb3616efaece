"""A family: one compact model per budget from one trained model, each an MLflow run like a sweep trial.

    result = run_family(RunConfig.from_dict({...}), levels=(0.5, 0.25, 0.12, 0.06, 0.03), init="dense.pt")

Shapes (``shape``): ``cascade`` fine-tunes each member from the previous one (the first from the trained model),
so the smaller members inherit the larger ones' training and every fine-tune runs on an ever smaller model;
``independent`` fine-tunes every member from the trained model itself. Without ``init`` the dense model is trained
first (its run is a member too: the front's dense point). Members run one after another in this process; each is
a child run of one parent run (tagged as a sweep, so ``chex-tune pareto`` and ``export`` read a family as they
read a sweep) with the same files, metrics and lineage as a built-in sweep trial.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import socket
import time
from collections.abc import Callable

from chex_tune.config import RunConfig
from chex_tune.train.artifacts import COMPACT
from chex_tune.train.loop import train
from chex_tune.train.metrics import EPOCH, MACS_RATIO, TEST_ACC, VAL_ACC
from chex_tune.tuning.finish import TrialEnd, finish_trial
from chex_tune.tuning.objectives import DEFAULT_OBJECTIVES, parse_objectives
from chex_tune.tuning.options import DEFAULT_LEVELS, SHAPES
from chex_tune.tuning.reference import BEYOND_TAG, MaxDrop, check_max_drop, dense_reference

logger = logging.getLogger(__name__)



@dataclasses.dataclass
class FamilyResult:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    members: list[dict]  # level, run_id, path (its compact.pt), and its final metrics
    rows: list  # the family's trial rows, ranked (rank 0: its front)
    reference: dict | None = None  # with a trained start: its own metrics (no member trains it), for comparison
    max_drop: MaxDrop | None = None  # --max-drop: its points and the dense val_acc the members were measured against
    stopped_at: str | None = None  # --max-drop: the member beyond it (recorded, off the front); no smaller level ran
    not_trained: tuple[float, ...] = ()  # the levels below it


    def __str__(self) -> str:
        from chex_tune.tuning.tables import reference_line, trials_table

        text = f"family {self.experiment!r} (parent run {self.parent_run_id})\n" + trials_table(
            self.rows, parse_objectives(DEFAULT_OBJECTIVES))
        if self.reference is not None:
            text += "\n" + reference_line(REFERENCE_LABEL, self.reference)
        if self.stopped_at is not None:
            text += "\n" + stop_line(self.members[-1], self.max_drop, self.not_trained)
        return text


REFERENCE_LABEL = "reference, the --init model as given (evaluated once, not a member)"


def run_family(settings: dict, *, levels=DEFAULT_LEVELS, init: str | None = None, shape: str = "cascade",
               experiment: str = "family", store: str = "mlflow", tracking_uri: str | None = None,
               dense_epochs: int | None = None, max_drop: float | None = None,
               log: Callable[[str], None] | None = None) -> FamilyResult:
    """Compact members at ``levels`` (fractions of the dense MACs) of the model ``settings`` describe (flat RunConfig
    settings; a fine-tune's defaults fill what they leave out), from ``init`` (weights file or MLflow URI) or from a
    dense model trained first: the model and data settings, for ``dense_epochs`` (default: the from-scratch
    default) at the from-scratch learning rate.

    ``max_drop`` (percentage points): the family stops descending at the first member whose val_acc is more than
    that below the dense model's (``init`` evaluated once, else the dense member); that member is recorded, tagged
    ``chex.beyond_max_drop=true`` and left off the front, and the smaller levels are not trained."""
    from chex_tune.tuning.track.recorder import SweepRecorder, time_stamp
    from chex_tune.tuning.track.runs import resolve_init
    from chex_tune.tuning.track.store import prepare_store

    log = log or logger.info
    levels = _check(levels, shape)
    max_drop = check_max_drop(max_drop)
    RunConfig.from_dict({**settings, "macs_target": levels[0]}, preset="finetune")  # every setting, checked now
    start = reference = None  # without init: the dense member trained below, the reference on the front itself
    if init is not None:  # read and checked before any run: weights that do not fit leave nothing behind
        start = resolve_init(init, store=store, tracking_uri=tracking_uri)  # once: an MLflow URI is downloaded
        settings, reference = _trained_start(settings, start, levels[0], log)
    store_dir, uri = prepare_store(store, tracking_uri)
    recorder = SweepRecorder(uri, experiment, sweep=f"{experiment}-{time_stamp()}", objectives=DEFAULT_OBJECTIVES)
    recorder.open(params={"levels": list(levels), "shape": shape, "init": init, "max_drop": max_drop},
                  tags={"chex.family": shape})
    work = store_dir / "family" / recorder.sweep
    members: list[dict] = []
    rule, stopped_at, not_trained = None, None, ()
    try:
        if start is None:
            members.append(_member(recorder, "dense", _dense(settings, dense_epochs), work / "dense", log))
            start = str(pathlib.Path(members[-1]["path"]).resolve())
        if max_drop is not None:  # the dense model's val_acc: the trained start's, else the dense member's
            rule = MaxDrop(max_drop, reference[VAL_ACC] if reference is not None else members[0][VAL_ACC])
            rule.record(recorder.client, recorder.parent_run_id)
        for index, level in enumerate(levels):
            member = RunConfig.from_dict({**settings, "init": start, "macs_target": level}, preset="finetune")
            members.append(_member(recorder, f"{level:g}", member, work / f"{level:g}", log))
            if rule is not None and rule.beyond(members[-1][VAL_ACC]):
                recorder.client.set_tag(members[-1]["run_id"], BEYOND_TAG, "true")
                stopped_at, not_trained = members[-1]["key"], levels[index + 1:]
                log(stop_line(members[-1], rule, not_trained))
                break
            if shape == "cascade":
                start = members[-1]["path"]
    except BaseException:
        recorder.close("KILLED")
        raise
    return FamilyResult(experiment, recorder.parent_run_id, uri, members, recorder.close(), reference, rule,
                        stopped_at, not_trained)


def stop_line(member: dict, rule: MaxDrop, not_trained) -> str:
    """Why a family stopped descending at ``member`` (beyond ``rule``) and which levels it left untrained."""
    left = ", ".join(f"{level:g}" for level in not_trained) or "none"
    return (f"stopped descending at level {member['key']}: val_acc {member[VAL_ACC]:.4f} is "
            f"{rule.drop(member[VAL_ACC]):.2f} pt below dense {rule.reference:.4f} (--max-drop {rule.points:g}); "
            f"levels {left} not trained")


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


def _dense(settings: dict, epochs: int | None) -> RunConfig:
    """The dense run a family without a trained start begins with: the model and data settings, from scratch."""
    from chex_tune.config import FINETUNE, ChexConfig

    chex = {f.name for f in dataclasses.fields(ChexConfig)} - {"seed"}
    kept = {k: v for k, v in settings.items() if k not in FINETUNE and k not in chex and k not in ("distill", "init")}
    return RunConfig.from_dict({**kept, "sparsity": 0.0, **({"epochs": epochs} if epochs else {})})


def _check(levels, shape: str) -> tuple[float, ...]:
    if shape not in SHAPES:
        raise ValueError(f"unknown family shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    levels = tuple(sorted(set(levels), reverse=True))
    if not levels or not all(isinstance(v, (int, float)) and 0 < v < 1 for v in levels):
        raise ValueError(f"--levels must be fractions of the dense MACs in (0, 1), like 0.5 0.25 0.12, got {levels}")
    return levels


def _member(recorder, key: str, config: RunConfig, out: pathlib.Path, log) -> dict:
    """Train one member as a child run of the family; returns its level, run id, compact model and metrics."""
    run_id = recorder.start_trial(key, config.to_dict(), searched=["macs_target"])
    started = time.perf_counter()

    def report_epoch(metrics: dict) -> None:
        recorder.log_epoch(key, metrics, step=int(metrics[EPOCH]))

    def record(end: TrialEnd) -> None:
        recorder.complete_trial(key, end.metrics, end.files, params=end.params)

    try:
        result = train(config, out, callback=report_epoch)
    except Exception as exc:  # the member fails alone; the family stops (later members need it)
        recorder.fail_trial(key, f"{type(exc).__name__}: {exc}")
        raise
    end = TrialEnd.of_run(result, out, seconds=time.perf_counter() - started, location={"host": socket.gethostname()})
    finish_trial(end, sink=record)
    log(f"member {key}: val_acc {result.val_acc:.4f}, MACs {result.macs_ratio:.3f} of dense "
        f"({result.train_seconds:.0f} s of training)")
    return {"key": key, "run_id": run_id, "path": str(out / COMPACT), **end.metrics}
