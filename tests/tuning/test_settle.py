"""settle_runs: what a sweep's child runs say once ``Tuner.fit`` returns, from Ray's record of each trial."""

from __future__ import annotations

import types

from chex_tune.tuning.protocol import FINAL_KEY
from chex_tune.tuning.resume import settle_runs
from chex_tune.tuning.track.recorder import SweepRecorder
from chex_tune.tuning.track.store import default_tracking_uri


def ray_result(key: str, *, done: bool, final: bool, checkpoint=None, error=None):
    metrics = {"trial_id": key, "done": done, "epoch": 2, "val_acc": 0.5, "macs": 10.0}
    if final:
        metrics[FINAL_KEY] = True
    return types.SimpleNamespace(metrics=metrics, error=error,
                                 checkpoint=None if checkpoint is None else types.SimpleNamespace(path=str(checkpoint)))


def test_only_trials_ray_saw_return_finish_and_the_rest_are_killed_or_failed(tmp_path):
    recorder = SweepRecorder(default_tracking_uri(tmp_path / "store"), "settle", objectives="val_acc:max,macs:min")
    recorder.open()
    files = tmp_path / "files"
    files.mkdir()
    (files / "compact.pt").write_bytes(b"not a model")  # the MLflow model copy fails: a warning, not a failure
    for key in ("returned", "final_report_only", "mid_training", "errored"):
        recorder.start_trial(key, {"sparsity": "0.5"})
    grid = [ray_result("returned", done=True, final=True, checkpoint=files),
            # Ctrl-C between its final report and its return: Ray's saved state restarts it on --resume
            ray_result("final_report_only", done=False, final=True, checkpoint=files),
            ray_result("mid_training", done=False, final=False),
            ray_result("errored", done=True, final=False, error=RuntimeError("boom"))]
    settle_runs(recorder, grid)
    status = {key: recorder.client.get_run(recorder.run_id(key)).info.status
              for key in ("returned", "final_report_only", "mid_training", "errored")}
    assert status == {"returned": "FINISHED", "final_report_only": "KILLED", "mid_training": "KILLED",
                      "errored": "FAILED"}
    finished = recorder.client.get_run(recorder.run_id("returned"))
    assert finished.data.metrics["val_acc"] == 0.5 and "chex.warning" in finished.data.tags
    assert "compact.pt" in {a.path for a in recorder.client.list_artifacts(recorder.run_id("returned"))}
