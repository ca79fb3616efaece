"""How every trial ends: the one place a trial's final report is made and sent.

Each driver ends its trials here: the built-in trial (in one process, or as rank 0 of a multi-worker trial),
a multi-worker trial handing its rank 0's end to Tune, ``--resume``'s replay of a finished trial, a user's
loop (``ChexReporter.finish``) and a family's members. A ``TrialEnd`` is the final metrics (numbers), the text
params and the trial's files; ``finish_trial`` checks it, keeps it in the files' ``metrics.json`` (so a trial that
``--resume`` restarts after it had finished is reported again instead of trained again: ``replay_finished``) and
sends it: to the family's recorder when one is given, else to the trial (Ray Train on a worker, Tune otherwise).
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from chex_tune.core._atomic import atomic_write_text
from chex_tune.train.artifacts import HISTORY, METRICS, is_complete, read_metrics
from chex_tune.train.metrics import MACS_RATIO, TRIAL_SECONDS
from chex_tune.train.result import RunResult
from chex_tune.tuning.protocol import FINAL_KEY, PARAMS_KEY
from chex_tune.tuning.session import report

FINAL_REPORT = "final_report"  # in a finished trial's metrics.json: the final report it sent


@dataclass
class TrialEnd:
    metrics: dict  # the final numbers (objectives among them)
    params: dict = field(default_factory=dict)  # text settings for the trial's MLflow params
    files: pathlib.Path | None = None  # the trial's files (compact.pt, metrics.json, ...); None on ranks but 0

    @classmethod
    def of_run(cls, result: RunResult, files: pathlib.Path, *, seconds: float, location: dict) -> TrialEnd:
        """A built-in run's end: its final metrics with the trial's whole time, its params with where it ran."""
        return cls({**result.final_metrics(), TRIAL_SECONDS: seconds}, {**result.text_params(), **location}, files)

    @classmethod
    def of_report(cls, final: dict, files: pathlib.Path | None) -> TrialEnd:
        """The end a final report describes (one read back from Ray, or kept in a trial's files)."""
        metrics = {k: v for k, v in final.items() if k not in (FINAL_KEY, PARAMS_KEY)}
        return cls(metrics, dict(final.get(PARAMS_KEY) or {}), files)

    def report(self) -> dict:
        return {**self.metrics, FINAL_KEY: True, PARAMS_KEY: self.params}


def finish_trial(end: TrialEnd, sink: Callable[[TrialEnd], object] | None = None) -> dict:
    """Send ``end`` as the trial's final report (to ``sink`` when given: a family's recorder); returns the report.
    Non-finite metrics are refused: a NaN accuracy must not become a front member (``macs_ratio`` is NaN for a
    model without MACs, which is no failure)."""
    bad = sorted(k for k, v in end.metrics.items()
                 if isinstance(v, float) and not math.isfinite(v) and k != MACS_RATIO)
    if bad:
        raise FloatingPointError(f"non-finite final metric(s) {bad}: {end.metrics}")
    final = end.report()
    if end.files is not None:
        path = pathlib.Path(end.files) / METRICS
        atomic_write_text(json.dumps({**read_metrics(end.files), FINAL_REPORT: final}, indent=1), path)
    if sink is not None:
        sink(end)
    else:
        report(final, end.files)
    return final


def replay_finished(checkpoint, files: pathlib.Path) -> bool:
    """Report a finished trial's epochs and end again, from its checkpoint, instead of training it again.

    Only a final report carries a checkpoint to Tune, so a trial that starts with one had finished when its sweep
    was interrupted, before Ray recorded its return (Ctrl-C or a killed driver in between); ``--resume`` restarts
    it from that checkpoint. Returns False (train) for a checkpoint without a finished trial's report.
    """
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as finished:
        record = read_metrics(finished)
        if FINAL_REPORT not in record or not is_complete(finished):
            return False
        shutil.copytree(finished, files, dirs_exist_ok=True)
    for epoch in record.get(HISTORY, []):
        report(dict(epoch))
    finish_trial(TrialEnd.of_report(record[FINAL_REPORT], files))
    return True
