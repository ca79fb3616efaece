"""Which member of a family runs next, and what it starts from: the family's searcher on Ray Tune.

A family is a sweep whose trials are fixed in advance: one member per MACs budget, largest first, after the dense
member when there is no trained start. ``FamilySearcher`` hands Ray Tune those members as its suggestions, each with
its parent (``chex_parent``: a finished member's compact model, found by the sweep's ``Lineage``): in a ``cascade``
the member before it, so a member is suggested only once that one has finished; in an ``independent`` family the
dense member (or, with a trained start, no parent: the start itself), so members run side by side. The family stops
suggesting when a member it needs fails, or when a member falls beyond ``--max-drop`` (recorded, off the front:
the smaller levels are not trained). Its state is saved as JSON with the sweep (``--resume``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from ray.tune.search import Searcher

from chex_tune.train.metrics import MACS_RATIO, VAL_ACC
from chex_tune.tuning.protocol import FINAL_KEY, FIXED_KEY, MEMBER_KEY, PARENT_KEY
from chex_tune.tuning.reference import MaxDrop

logger = logging.getLogger(__name__)

DENSE = "dense"  # the member name of the dense model a family without a trained start trains first


def member_name(level: float) -> str:
    return f"{level:g}"


class FamilySearcher(Searcher):
    """The members of one family as Ray Tune suggestions, each from its parent (see the module docstring)."""

    def __init__(self, levels, *, shape: str, lineage, dense: dict | None = None, max_drop: float | None = None,
                 reference: float | None = None, recorder=None, log: Callable[[str], None] | None = None,
                 accuracy: str = VAL_ACC):
        super().__init__(metric=None, mode=None)
        self.levels = tuple(levels)
        self.shape = shape
        self.lineage = lineage  # the sweep's Lineage callback: every finished trial's compact model
        self.dense = dense  # the dense member's settings (all of them: they replace the members' shared ones)
        self.points = max_drop
        self.rule = MaxDrop(max_drop, reference) if max_drop is not None and reference is not None else None
        self.recorder = recorder  # the sweep's MLflow recorder: a dense member's val_acc becomes the --max-drop rule
        self.log = log or logger.info
        self.accuracy = accuracy  # the metric a member's line shows (a user's trainable: its first maximised one)
        self.trials: dict[str, str] = {}  # member name -> its Ray trial id
        self.failed: str | None = None  # the member whose failure ended the family
        self.stopped_at: str | None = None  # the member beyond --max-drop

    @property
    def members(self) -> list[str]:
        return ([DENSE] if self.dense is not None else []) + [member_name(level) for level in self.levels]

    @property
    def not_trained(self) -> tuple[float, ...]:
        """The levels never suggested (below a member beyond --max-drop, or after a failure)."""
        return tuple(level for level in self.levels if member_name(level) not in self.trials)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the members are fixed: nothing to search, whatever the metric

    def suggest(self, trial_id: str):
        if self.failed is not None or self.stopped_at is not None:
            return Searcher.FINISHED
        waiting = [name for name in self.members if name not in self.trials]
        if not waiting:
            return Searcher.FINISHED
        name = waiting[0]
        if name == DENSE:
            config = {FIXED_KEY: self.dense, "macs_target": None}
        else:
            parent = self._parent_of(name)
            if parent is False:
                return None  # its parent has not finished yet: asked again at Ray's next step
            config = {"macs_target": float(name), **({PARENT_KEY: parent} if parent else {})}
        self.trials[name] = trial_id
        return {**config, MEMBER_KEY: name}

    def _parent_of(self, name: str) -> dict | None | bool:
        """The parent ``name`` starts from (None: the trained start), or False while it has not finished."""
        members = self.members
        index = members.index(name)
        before = (members[index - 1] if index > 0 else None) if self.shape == "cascade" else DENSE
        if before not in members:
            return None  # the first member from a trained start (of a cascade, or any independent one)
        trial_id = self.trials.get(before)
        finished = self.lineage.finished.get(trial_id) if trial_id is not None else None
        if finished is None:
            if trial_id is not None and trial_id in self.lineage.passed_over:
                self.failed = before  # it ended without a model a member could start from
            return False
        return {"path": finished.compact, "trial_id": trial_id}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        name = next((n for n, t in self.trials.items() if t == trial_id), None)
        if name is None:
            return
        if error or not result or not result.get(FINAL_KEY):
            if name == DENSE or self.shape == "cascade":  # later members needed it
                self.failed = name
                self.log(f"member {name} failed: the family stops (later members start from it)")
            return
        self.log(f"member {name}: {self.accuracy} {result.get(self.accuracy, float('nan')):.4f}, MACs "
                 f"{result.get(MACS_RATIO, float('nan')):.3f} of dense")
        if name == DENSE and self.points is not None:  # the dense member is the reference of --max-drop
            self.rule = MaxDrop(self.points, float(result[VAL_ACC]))
            if self.recorder is not None:
                self.rule.record(self.recorder.client, self.recorder.parent_run_id)
        elif self.rule is not None and self.rule.beyond(float(result[VAL_ACC])) and self.stopped_at is None:
            self.stopped_at = name
            self.log(stop_line(name, float(result[VAL_ACC]), self.rule, self.not_trained))

    def save(self, checkpoint_path: str) -> None:
        state = {"trials": self.trials, "failed": self.failed, "stopped_at": self.stopped_at,
                 "rule": [self.rule.points, self.rule.reference] if self.rule is not None else None}
        with open(checkpoint_path, "w", encoding="utf-8") as handle:
            json.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, encoding="utf-8") as handle:
            state = json.load(handle)
        self.trials = dict(state["trials"])
        self.failed, self.stopped_at = state["failed"], state["stopped_at"]
        self.rule = MaxDrop(*state["rule"]) if state["rule"] else None


def stop_line(name: str, val_acc: float, rule: MaxDrop, not_trained) -> str:
    """Why a family stopped descending at member ``name`` (beyond ``rule``) and which levels it left untrained."""
    left = ", ".join(member_name(level) for level in not_trained) or "none"
    return (f"stopped descending at level {name}: val_acc {val_acc:.4f} is {rule.drop(val_acc):.2f} pt below "
            f"dense {rule.reference:.4f} (--max-drop {rule.points:g}); levels {left} not trained")
