"""Exporting one trial of a sweep: choose it by a constraint, write it as a file, check it, register it.

    constraint = Constraint.parse(max_macs="2.5M")
    trials = read_trials(client, "fashion_mnist_resnet18", objectives=constraint.objectives)
    row, why = choose(trials, constraint)
    result = export_run(client, row, "onnx", "model.onnx")

Formats: ``state`` is the run's ``compact.pt`` as it is (recipe + weights, loaded with
``chex_tune.load_compact``, no pickle); ``torchscript`` is a ``torch.jit.trace`` of the compact model
in eval mode; ``onnx`` comes from torch's ``torch.export``-based exporter (``dynamo=True``, the default
since torch 2.9; the older TorchScript-based exporter is deprecated), with a dynamic batch dimension.
Every written file is loaded back the way a user would load it and scored: by the user's own evaluate
function when given one, else on the validation split of the built-in trainable's config. A run of a
user's own trainable without an evaluate function is written but not scored, and the result says so.
Compact models of users' own module classes load through their importable builder (core/builders.py).
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import yaml

from chex_tune.config import RunConfig
from chex_tune.core.builders import BuilderImportError
from chex_tune.core.compact import load_compact
from chex_tune.tuning.pareto import non_dominated_ranks
from chex_tune.tuning.runs import format_metric
from chex_tune.units import parse_count

FORMATS = ("state", "torchscript", "onnx")
SHOWN_CANDIDATES = 3  # nearest misses listed when no run meets a constraint
MODEL_ARTIFACT = "model"  # the mlflow.pytorch model every trial logs (tracking.py)


# ------------------------------------------------------------------------------------ the constraint
def parse_accuracy(text) -> float:
    """A fraction (``0.9``) or a percentage (``90%``), as a fraction in (0, 1]."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ValueError(f"--min-acc must be a validation accuracy in (0, 1] like 0.9 (or 90%), got {text!r}")
    return value


def parse_milliseconds(text) -> float:
    """A latency bound in milliseconds (``2.5``, or ``2.5ms``), as a positive number."""
    raw = str(text).strip()
    raw = raw[:-2] if raw.lower().endswith("ms") else raw
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--max-latency-ms must be a positive number of milliseconds like 2.5, got {text!r}")
    return value


@dataclass(frozen=True)
class Constraint:
    """A bound on one logged metric: ``metric <= bound`` (costs) or ``metric >= bound`` (accuracy)."""

    metric: str  # "macs", "latency_ms" or "val_acc"
    bound: float
    upper: bool  # True: the metric must stay at or below the bound

    @classmethod
    def parse(cls, *, max_macs=None, max_latency_ms=None, min_acc=None) -> Constraint:
        given = [(name, value) for name, value in (("max_macs", max_macs), ("max_latency_ms", max_latency_ms),
                                                   ("min_acc", min_acc)) if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --max-macs, --max-latency-ms, --min-acc (or --run)")
        if max_macs is not None:
            return cls("macs", parse_count(max_macs, "--max-macs"), True)
        if max_latency_ms is not None:
            return cls("latency_ms", parse_milliseconds(max_latency_ms), True)
        return cls("val_acc", parse_accuracy(min_acc), False)

    @property
    def cost(self) -> str:
        """The cost the choice trades accuracy against (MACs for an accuracy floor)."""
        return "macs" if self.metric == "val_acc" else self.metric

    @property
    def objectives(self) -> str:
        """The front the choice is made on: accuracy against the constrained cost."""
        return f"val_acc:max,{self.cost}:min"

    def met(self, row: dict) -> bool:
        value = row["metrics"][self.metric]
        return value <= self.bound if self.upper else value >= self.bound

    def miss(self, row: dict) -> float:
        """How far the row is from meeting the bound (0 when it does)."""
        value = row["metrics"][self.metric]
        return max(0.0, value - self.bound if self.upper else self.bound - value)

    def __str__(self) -> str:
        return f"{self.metric} {'<=' if self.upper else '>='} {format_metric(self.metric, self.bound)}"


def describe(row: dict, metrics=("val_acc", "macs", "latency_ms")) -> str:
    return ", ".join(f"{name} {format_metric(name, row['metrics'].get(name))}" for name in metrics)


def choose(trials, constraint: Constraint) -> tuple[dict, str]:
    """The front member that best satisfies ``constraint``, and why it was chosen.

    The front is re-ranked here on val_acc against the constraint's cost, whatever ``trials`` was read
    with (reading it with ``constraint.objectives`` makes read_trials name a metric nobody logged). A
    cost bound picks the most accurate member within it (the lower cost breaks ties); an accuracy floor
    picks the cheapest member that reaches it, since the most accurate run would ignore the floor.
    """
    ranked = rank_for(trials, constraint)
    front = [row for row in ranked if row["rank"] == 0]
    meeting = [row for row in front if constraint.met(row)]
    if not meeting:
        nearest = sorted(front, key=constraint.miss)[:SHOWN_CANDIDATES]
        shown = dict.fromkeys((constraint.metric, "val_acc", constraint.cost))  # the bound's metric first
        listed = "; ".join(f"run {row['run_id']} ({describe(row, shown)})" for row in nearest)
        raise ValueError(f"no trial of experiment {trials.experiment!r} on the val_acc/{constraint.cost} front has "
                         f"{constraint}; nearest: {listed or '(no finished trials)'}")
    if constraint.upper:
        best = min(meeting, key=lambda r: (-r["metrics"]["val_acc"], r["metrics"][constraint.cost], r["run_id"]))
        why = f"the most accurate of {len(meeting)} of {len(front)} front members with {constraint}"
    else:
        best = min(meeting, key=lambda r: (r["metrics"]["macs"], -r["metrics"]["val_acc"], r["run_id"]))
        why = f"the cheapest (MACs) of {len(meeting)} of {len(front)} front members with {constraint}"
    return best, why


def rank_for(trials, constraint: Constraint) -> list[dict]:
    """Rows re-ranked on the val_acc/cost front (failed runs and runs missing either metric: rank -1)."""
    names = ("val_acc", constraint.cost)  # the constrained metric is one of the two
    values = [[row["metrics"].get(n, math.nan) if row["status"] == "FINISHED" else math.nan for n in names]
              for row in trials.rows]
    ranks = non_dominated_ranks(values, [True, False]) if values else []
    return [{**row, "rank": int(rank)} for row, rank in zip(trials.rows, ranks)]


def find_run(trials, run_id: str) -> tuple[dict, str]:
    """The finished trial ``run_id`` of the experiment, whatever its rank."""
    row = next((r for r in trials.rows if r["run_id"] == run_id), None)
    if row is None:
        raise ValueError(f"run {run_id!r} is not a trial of experiment {trials.experiment!r} "
                         f"(sweeps read: {', '.join(s['name'] for s in trials.sweeps)})")
    if row["status"] != "FINISHED":
        raise ValueError(f"run {run_id} did not finish (status {row['status']}"
                         f"{': ' + row['error'] if row.get('error') else ''}); it has no model to export")
    return row, "asked for with --run"


# ------------------------------------------------------------------------------------ writing
def write_export(compact_path: pathlib.Path, fmt_name: str, out: pathlib.Path) -> None:
    """``compact_path`` (a chex_tune compact model) written to ``out`` in ``fmt_name``."""
    if fmt_name not in FORMATS:
        raise ValueError(f"unknown export format {fmt_name!r}; choose one of: {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt_name == "state":
        shutil.copyfile(compact_path, out)
        return
    model = load_compact(compact_path).eval()
    write_module(model, model.chex_recipe["input_shape"], fmt_name, out)


def write_module(model: torch.nn.Module, input_shape, fmt_name: str, out: pathlib.Path) -> None:
    """A module traced (TorchScript) or exported (ONNX, dynamic batch) to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Batch 2, not 1: a trace or export at batch 1 may bake the batch size into reshapes.
    example = torch.zeros([2, *list(input_shape)[1:]])
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.13 deprecates TorchScript, and its exporter warns about its own internals: nothing to act on
        warnings.filterwarnings("ignore", message=r".*(deprecated|LeafSpec).*")
        warnings.filterwarnings("ignore", message=r".*in training mode.*")  # a pt2 graph is fixed in eval form
        if fmt_name == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), str(out))
        else:
            _require("onnxscript", "onnx")
            torch.onnx.export(model, (example,), str(out), dynamo=True, verbose=False, external_data=False,
                              input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))


def write_from_mlflow_model(tracking_uri: str, run_id: str, compact_path: pathlib.Path, fmt_name: str,
                            out: pathlib.Path) -> None:
    """The run's ``mlflow.pytorch`` copy (pt2: a graph, no class needed) written to ``out`` in ``fmt_name``."""
    import mlflow.pytorch

    from chex_tune.tuning.tracking import using_tracking_uri

    input_shape = torch.load(compact_path, map_location="cpu", weights_only=True)["input_shape"]
    with using_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}")
    write_module(model, input_shape, fmt_name, out)


def _require(*modules: str) -> None:
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install onnx onnxscript onnxruntime")


class OnnxModel(torch.nn.Module):
    """An ONNX file run by onnxruntime, shaped as a module so the training loop's ``evaluate`` can score it."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        _require("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share torch was given
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: images.detach().cpu().float().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def load_exported(path: str | os.PathLike, fmt_name: str) -> torch.nn.Module:
    """The written file loaded back as its users would: load_compact, torch.jit.load or onnxruntime."""
    if fmt_name == "state":
        return load_compact(path)
    if fmt_name == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*deprecated.*")
            return torch.jit.load(str(path), map_location="cpu").eval()
    return OnnxModel(path)


def validation_accuracy(model: torch.nn.Module, config: RunConfig) -> float:
    """Top-1 accuracy on the run's validation split, on the CPU (the split is fixed by the dataset settings)."""
    from chex_tune.train.data import load_data
    from chex_tune.train.loop import evaluate

    return evaluate(model, load_data(config.train, "cpu"), "val")


@dataclass
class ExportResult:
    run: dict  # the chosen trial row
    format: str
    path: pathlib.Path
    logged_val_acc: float
    exported_val_acc: float | None  # None: not evaluated (``note`` says why)
    config: RunConfig | None  # the built-in trainable's settings; None for a user's own trainable
    note: str = ""  # how the file was evaluated, or why it was not
    exported_metrics: dict | None = None  # what a user's evaluate function returned
    fallback: str = ""  # set when the file was written from the run's MLflow model (builder not importable)


def resolve_evaluator(evaluate) -> Callable:
    """A function ``model -> accuracy (or a dict of metrics)``, given as itself or as ``"package.module:function"``."""
    from chex_tune.core.builders import BuilderImportError, resolve_builder

    if callable(evaluate):
        return evaluate
    try:
        return resolve_builder(str(evaluate))
    except BuilderImportError as exc:
        raise ValueError(f"--evaluate: {str(exc).replace('model builder', 'evaluate function')}") from None


def export_run(client, row: dict, fmt_name: str, out: str | os.PathLike, *, evaluate=None,
               tracking_uri: str | None = None) -> ExportResult:
    """Download the run's compact model, write ``out`` in ``fmt_name`` and score the written file.

    Scoring: ``evaluate`` (a function of the loaded model, or its ``"package.module:function"``), else the
    validation split of the built-in trainable's dataset; a run of a user's own trainable without
    ``evaluate`` is not scored, and ``note`` says so. When the compact model's builder cannot be imported
    here, TorchScript and ONNX files are written from the run's MLflow model instead (given
    ``tracking_uri``), and ``fallback`` says so.
    """
    out = pathlib.Path(out).expanduser().resolve()
    run_id = row["run_id"]
    evaluator = resolve_evaluator(evaluate) if evaluate is not None else None  # a bad reference fails first
    with tempfile.TemporaryDirectory() as tmp:
        names = _artifact_names(client, run_id)
        compact = pathlib.Path(_download(client, run_id, "compact.pt", tmp, names))
        config_text = pathlib.Path(_download(client, run_id, "config.yaml", tmp, names)).read_text() \
            if "config.yaml" in names else None
        fallback = ""
        try:
            write_export(compact, fmt_name, out)
        except BuilderImportError as exc:
            if tracking_uri is None:
                raise
            try:  # the graph MLflow keeps needs no importable class
                write_from_mlflow_model(tracking_uri, run_id, compact, fmt_name, out)
            except Exception as mlflow_error:  # noqa: BLE001 - report both reasons
                raise ValueError(f"{exc}; the run's MLflow model could not be exported instead either "
                                 f"({type(mlflow_error).__name__}: {mlflow_error})") from exc
            fallback = (f"exported from the run's MLflow model (pt2), since its builder is not importable here "
                        f"({exc})")
    config = RunConfig.from_dict(yaml.safe_load(config_text)) if config_text is not None else None
    logged = row["metrics"].get("val_acc", math.nan)
    if evaluator is not None:
        name = evaluate if isinstance(evaluate, str) else getattr(evaluate, "__qualname__", repr(evaluate))
        value = evaluator(load_exported(out, fmt_name))
        metrics = dict(value) if isinstance(value, dict) else {"val_acc": float(value)}
        accuracy = metrics.get("val_acc")
        return ExportResult(row, fmt_name, out, logged, None if accuracy is None else float(accuracy), config,
                            f"evaluated with {name}", metrics, fallback)
    if config is None:
        return ExportResult(row, fmt_name, out, logged, None, None,
                            f"not evaluated: run {run_id} was trained by your own trainable, so chex-tune has no "
                            "dataset to score the written file on; pass --evaluate package.module:function (a "
                            "function that takes the loaded model and returns its validation accuracy or a dict "
                            "of metrics)", fallback=fallback)
    try:
        accuracy = validation_accuracy(load_exported(out, fmt_name), config)
    except ValueError as exc:  # e.g. the dataset is not on this machine
        raise ValueError(f"wrote {out}, but could not score it on the validation split: {exc}") from exc
    return ExportResult(row, fmt_name, out, logged, accuracy, config,
                        f"{config.train.dataset} validation split, on the CPU", fallback=fallback)


def _artifact_names(client, run_id: str) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id)}


def _download(client, run_id: str, artifact: str, directory: str, names: set[str] | None = None) -> str:
    names = _artifact_names(client, run_id) if names is None else names
    if artifact not in names:
        raise ValueError(f"run {run_id} has no {artifact} artifact (it holds: {', '.join(sorted(names)) or 'nothing'})")
    return client.download_artifacts(run_id, artifact, directory)


# ------------------------------------------------------------------------------------ the registry
def register(client, row: dict, experiment_id: str, name: str, alias: str, *, why: str = ""):
    """Register the run's model as a new version of ``name`` and point ``alias`` at it; returns the version.

    The version's source is the run's logged ``mlflow.pytorch`` model when it has one (so
    ``mlflow.pytorch.load_model("models:/NAME@ALIAS")`` works), else its ``compact.pt`` artifact.
    Only the client is used: MLflow's fluent ``register_model`` reads the process-wide tracking URI.
    Stages are deprecated in MLflow: the alias is how a consumer names the chosen version.
    """
    from mlflow.exceptions import MlflowException

    check_alias(alias)
    run_id = row["run_id"]
    logged = [m for m in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
              if m.name == MODEL_ARTIFACT]
    if logged:
        source, model_id = logged[0].artifact_location, logged[0].model_id
    else:
        source, model_id = f"{client.get_run(run_id).info.artifact_uri}/compact.pt", None
    tags = {"chex.run_id": run_id, "chex.source": "mlflow.pytorch" if logged else "compact.pt",
            **{k: str(v) for k, v in row["metrics"].items() if k in ("val_acc", "test_acc", "macs", "params")}}
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
