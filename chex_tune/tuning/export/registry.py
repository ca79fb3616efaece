"""The MLflow model registry: a chosen trial's model as a new version of a registered model, named by an alias."""

from __future__ import annotations

import pathlib
import re

from chex_tune.train.artifacts import COMPACT
from chex_tune.train.metrics import MACS, PARAMS, TEST_ACC, VAL_ACC
from chex_tune.tuning.protocol import TrialRow

MODEL_ARTIFACT = "model"  # the mlflow.pytorch model every trial logs (track/recorder.py)
EXPORTS = "export"  # where an exported file that is registered is logged on its run (an INT8 ONNX file)


def register(client, row: TrialRow, experiment_id: str, name: str, alias: str, *, why: str = "",
             file: pathlib.Path | None = None, kind: str = "", extra_tags: dict | None = None):
    """Register the run's model as a new version of ``name`` and point ``alias`` at it; returns the version.

    With ``file`` (an exported file that is not the run's model, as an INT8 ONNX file is), the file is logged on the
    run under ``export/`` and is the version's source, tagged ``chex.source`` = its artifact path and
    ``chex.format`` = ``kind``; ``extra_tags`` join the version's tags (the INT8 check's figures). Otherwise the
    version's source is the run's logged ``mlflow.pytorch`` model when it has one (so
    ``mlflow.pytorch.load_model("models:/NAME@ALIAS")`` works), else its ``compact.pt`` artifact.
    Only the client is used: MLflow's fluent ``register_model`` reads the process-wide tracking URI.
    Stages are deprecated in MLflow: the alias is how a consumer names the chosen version.
    """
    from mlflow.exceptions import MlflowException

    check_alias(alias)
    run_id = row.run_id
    if file is not None:
        client.log_artifact(run_id, str(file), EXPORTS)
        artifact = f"{EXPORTS}/{pathlib.Path(file).name}"
        source, model_id, kept = f"{client.get_run(run_id).info.artifact_uri}/{artifact}", None, artifact
    else:
        logged = [m for m in client.search_logged_models([experiment_id],
                                                         filter_string=f"source_run_id = '{run_id}'")
                  if m.name == MODEL_ARTIFACT]
        if logged:
            source, model_id, kept = logged[0].artifact_location, logged[0].model_id, "mlflow.pytorch"
        else:
            source, model_id, kept = f"{client.get_run(run_id).info.artifact_uri}/{COMPACT}", None, COMPACT
    tags = {"chex.run_id": run_id, "chex.source": kept, **({"chex.format": kind} if kind else {}),
            **{k: str(v) for k, v in row.metrics.items() if k in (VAL_ACC, TEST_ACC, MACS, PARAMS)},
            **{str(k): str(v) for k, v in (extra_tags or {}).items()}}
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, source, run_id=run_id, model_id=model_id, tags=tags,
                                              description=why or None)
        client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        raise ValueError(f"could not register run {run_id} as {name}@{alias}: {exc.message}") from exc
    return version


def check_alias(alias: str) -> None:
    """MLflow's alias rules, checked before a version is created (a rejected alias would leave it unnamed)."""
    if not re.fullmatch(r"[\w-]+", alias or ""):
        raise ValueError(f"--alias {alias!r}: use letters, digits, '_' and '-' only (e.g. champion)")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ValueError(f"--alias {alias!r} is reserved by MLflow ('latest' and v<N> name versions); "
                         "choose another, e.g. champion")
