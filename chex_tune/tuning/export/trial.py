"""Exporting one trial: download its compact model, write it in a format, score the written file.

A TorchScript or ONNX file is first checked against the model it was written from (``check``: the largest output
difference, and its latency in its runtime beside PyTorch's), logged on the trial's run. Every written file is then
loaded back the way a user would load it and scored: by the user's own evaluate function
when given one, else on the validation split of the built-in loop's run configuration. A run of a user's own
trainable without an evaluate function is written but not scored, and the result says so. Compact models of
users' own module classes load through their importable builder (core/builders.py); when that builder is not
importable here, TorchScript and ONNX files are written from the run's MLflow model (a graph, no class needed).
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from chex_tune.config import RunConfig
from chex_tune.core.builders import BuilderImportError
from chex_tune.train.artifacts import COMPACT, RUN_CONFIG, dataset_settings
from chex_tune.train.metrics import VAL_ACC
from chex_tune.tuning.export.check import ExportCheck, check_export
from chex_tune.tuning.export.formats import (
    check_folds,
    input_shape_of,
    load_exported,
    runtime_of,
    write_export,
    write_from_mlflow_model,
)
from chex_tune.tuning.export.int8 import (
    Int8Check,
    NotQuantizable,
    calibration_images,
    check_int8,
    check_int8_arguments,
    fp32_twin,
    quantize,
)
from chex_tune.tuning.export.preprocessing import Denormalized, Preprocessing, preprocessing_of
from chex_tune.tuning.protocol import TrialRow

log = logging.getLogger(__name__)


def validation_accuracy(model, config: RunConfig) -> float:
    """Top-1 accuracy on the run's validation split, on the CPU (the split is fixed by the dataset settings)."""
    from chex_tune.train.data import load_data
    from chex_tune.train.evaluate import evaluate

    return evaluate(model, load_data(config.train, "cpu"), "val")


@dataclass
class ExportResult:
    run: TrialRow  # the chosen trial
    format: str
    path: pathlib.Path
    logged_val_acc: float
    exported_val_acc: float | None  # None: not evaluated (``note`` says why)
    config: RunConfig | None  # the built-in trainable's settings; None for a user's own trainable
    note: str = ""  # how the file was evaluated, or why it was not
    exported_metrics: dict | None = None  # what a user's evaluate function returned
    fallback: str = ""  # set when the file was written from the run's MLflow model (builder not importable)
    check: ExportCheck | None = None  # the written file against the model it came from (None for ``state``)
    preprocessing: Preprocessing | None = None  # the input the file expects (in an ONNX file's metadata too)
    int8: Int8Check | None = None  # an INT8 file against the FP32 file it was quantized from (--quantize int8)
    fp32_path: pathlib.Path | None = None  # that FP32 file, kept beside the INT8 one
    int8_fallback: str = ""  # why the FP32 file was written instead of an INT8 one (--int8-fallback fp32)


def resolve_evaluator(evaluate) -> Callable:
    """A function ``model -> accuracy (or a dict of metrics)``, given as itself or as ``"package.module:function"``."""
    from chex_tune.core.builders import BuilderImportError, resolve_builder

    if callable(evaluate):
        return evaluate
    try:
        return resolve_builder(str(evaluate))
    except BuilderImportError as exc:
        raise ValueError(f"--evaluate: {str(exc).replace('model builder', 'evaluate function')}") from None


def export_run(client, row: TrialRow, fmt_name: str, out: str | os.PathLike, *, evaluate=None,
               tracking_uri: str | None = None, with_normalization: bool = False, quantize_to: str | None = None,
               calibration: int | None = None, int8_fallback: str | None = None) -> ExportResult:
    """Download the run's compact model, write ``out`` in ``fmt_name`` and score the written file.

    Scoring: ``evaluate`` (a function of the loaded model, or its ``"package.module:function"``), else the
    validation split of the built-in trainable's dataset; a run of a user's own trainable without
    ``evaluate`` is not scored, and ``note`` says so. When the compact model's builder cannot be imported
    here, TorchScript and ONNX files are written from the run's MLflow model instead (given
    ``tracking_uri``), and ``fallback`` says so. The input the file expects (``preprocessing``: pixel scale,
    mean and std, size, channel order, class names) goes into an ONNX file's metadata; ``with_normalization``
    puts the normalisation into its graph, so that it takes pixels in [0, 1].

    ``quantize_to="int8"`` (ONNX only): the FP32 file is written beside ``out`` (``NAME.fp32.onnx``), then quantized
    into ``out`` (``int8.py``), calibrated on ``calibration`` images of the run's training split, and checked
    against the FP32 file (``int8``, logged on the run as ``export.onnx_int8.*``); the written file scored is the
    INT8 one. A graph ONNX Runtime leaves partly in float is refused, naming the ops, unless ``int8_fallback="fp32"``:
    then the FP32 file is written to ``out`` and ``int8_fallback`` says why.
    """
    out = pathlib.Path(out).expanduser().resolve()
    run_id = row.run_id
    n_calibration = check_int8_arguments(fmt_name, quantize_to, calibration, int8_fallback)
    evaluator = resolve_evaluator(evaluate) if evaluate is not None else None  # a bad reference fails first
    if with_normalization:
        check_folds(fmt_name)
    written = fp32_twin(out) if quantize_to else out
    with tempfile.TemporaryDirectory() as tmp:
        compact, config = _download_run(client, run_id, tmp)
        preprocessing = preprocessing_of(config, input_shape_of(compact), fold=with_normalization)
        calibrating = _calibration(config, run_id, n_calibration, preprocessing) if quantize_to else None
        written_from, fallback = _write(compact, fmt_name, written, preprocessing, tracking_uri, run_id)
    check, exported = None, None
    if written_from is not None:  # loaded once here, checked, then scored below
        exported = load_exported(written, fmt_name)
        model, input_shape = written_from
        check = check_export(model, exported, input_shape, runtime_of(fmt_name))
        for name, value in check.metrics(fmt_name).items():
            client.log_metric(run_id, name, value)
    extra = {"fallback": fallback, "check": check, "preprocessing": preprocessing}
    if calibrating is not None:
        extra.update(_quantized(client, run_id, written, out, calibrating, n_calibration, preprocessing,
                                int8_fallback))
        exported = load_exported(out, fmt_name)
    return _scored(row, fmt_name, out, config, exported, evaluate, evaluator, extra)


def _download_run(client, run_id: str, tmp: str) -> tuple[pathlib.Path, RunConfig | None]:
    """The run's compact model, and the built-in loop's run configuration (None for a user's own trainable)."""
    names = _artifact_names(client, run_id)
    compact = pathlib.Path(_download(client, run_id, COMPACT, tmp, names))
    config_text = pathlib.Path(_download(client, run_id, RUN_CONFIG, tmp, names)).read_text() \
        if RUN_CONFIG in names else None
    settings = dataset_settings(config_text)
    return compact, RunConfig.from_dict(settings) if settings is not None else None


def _write(compact, fmt_name: str, written: pathlib.Path, preprocessing, tracking_uri: str | None, run_id: str):
    """Write the file from the compact model, or from the run's MLflow model when its builder is not importable
    here; returns what ``write_export`` returns and why the fallback was taken ("" when it was not)."""
    try:
        return write_export(compact, fmt_name, written, preprocessing=preprocessing), ""
    except BuilderImportError as exc:
        if tracking_uri is None:
            raise
        try:  # the graph MLflow keeps needs no importable class
            written_from = write_from_mlflow_model(tracking_uri, run_id, compact, fmt_name, written,
                                                   preprocessing=preprocessing)
        except Exception as mlflow_error:  # noqa: BLE001 - report both reasons
            raise ValueError(f"{exc}; the run's MLflow model could not be exported instead either "
                             f"({type(mlflow_error).__name__}: {mlflow_error})") from exc
        return written_from, (f"exported from the run's MLflow model (pt2), since its builder is not importable "
                              f"here ({exc})")


def _scored(row: TrialRow, fmt_name: str, out: pathlib.Path, config: RunConfig | None, exported, evaluate, evaluator,
            extra: dict) -> ExportResult:
    """The written file scored: by the user's ``evaluate``, by the INT8 check's validation pass, on the built-in
    loop's validation split, or not at all (a user's trainable without ``evaluate``: the note says so). ``exported``:
    the written file as loaded for its check, None where it had none (it is loaded here only to be scored)."""
    logged, preprocessing = row.value(VAL_ACC), extra["preprocessing"]
    if exported is None and (evaluator is not None or config is not None):
        exported = load_exported(out, fmt_name)
    if evaluator is not None:
        name = evaluate if isinstance(evaluate, str) else getattr(evaluate, "__qualname__", repr(evaluate))
        value = evaluator(exported)
        metrics = dict(value) if isinstance(value, dict) else {VAL_ACC: float(value)}
        accuracy = metrics.get(VAL_ACC)
        return ExportResult(row, fmt_name, out, logged, None if accuracy is None else float(accuracy), config,
                            f"evaluated with {name}", metrics, **extra)
    if config is None:
        return ExportResult(row, fmt_name, out, logged, None, None,
                            f"not evaluated: run {row.run_id} was trained by your own trainable, so chex-tune has no "
                            "dataset to score the written file on; pass --evaluate package.module:function (a "
                            "function that takes the loaded model and returns its validation accuracy or a dict "
                            "of metrics)", **extra)
    fed = ", fed pixels in [0, 1]" if preprocessing.folded else ""
    if extra.get("int8") is not None:  # the INT8 check scored it on the validation split already
        return ExportResult(row, fmt_name, out, logged, extra["int8"].val_acc, config,
                            f"{config.train.dataset} validation split, on the CPU, the INT8 file{fed}", **extra)
    scored = Denormalized(exported, preprocessing.mean, preprocessing.std) if preprocessing.folded else exported
    try:  # (a folded file normalises raw pixels itself; the loop's batches are normalised)
        accuracy = validation_accuracy(scored, config)
    except ValueError as exc:  # e.g. the dataset is not on this machine
        raise ValueError(f"wrote {out}, but could not score it on the validation split: {exc}") from exc
    return ExportResult(row, fmt_name, out, logged, accuracy, config,
                        f"{config.train.dataset} validation split, on the CPU{fed}", **extra)


def _calibration(config: RunConfig | None, run_id: str, n: int, preprocessing: Preprocessing):
    """The run's data and its ``n`` calibration images, before anything is written: a run without a dataset, or a
    training split smaller than ``n``, is refused here."""
    from chex_tune.train.data import load_data

    if config is None:
        raise ValueError(f"--quantize int8 calibrates on the run's training images, and run {run_id} was trained by "
                         "your own trainable (no dataset in its config.yaml): export it with --format onnx (FP32) and "
                         "quantize that file with onnxruntime.quantization.quantize_static on your own images")
    data = load_data(config.train, "cpu")
    images = calibration_images(data, n, raw=preprocessing.folded, mean=preprocessing.mean, std=preprocessing.std)
    return data, images


def _quantized(client, run_id: str, fp32: pathlib.Path, out: pathlib.Path, calibrating, n: int,
               preprocessing: Preprocessing, fallback: str | None) -> dict:
    """``fp32`` quantized into ``out`` and checked against it (logged on the run); or, where ONNX Runtime cannot
    quantize the graph, refused, or with ``fallback="fp32"`` the FP32 file moved to ``out``."""
    data, images = calibrating
    try:
        quantize(fp32, out, images)
    except NotQuantizable as exc:
        out.unlink(missing_ok=True)
        if fallback != "fp32":
            raise ValueError(f"{exc}; nothing was written to {out} (the FP32 file is {fp32}): pass --int8-fallback "
                             "fp32 to export the FP32 file instead, or export without --quantize") from exc
        shutil.move(fp32, out)
        log.warning("INT8 export fell back to FP32: %s", exc)
        return {"int8_fallback": f"{exc}; wrote the FP32 file instead (--int8-fallback fp32)"}
    int8 = check_int8(out, fp32, data, n, raw=preprocessing.folded, mean=preprocessing.mean, std=preprocessing.std)
    for name, value in int8.metrics().items():
        client.log_metric(run_id, name, value)
    return {"int8": int8, "fp32_path": fp32}


def _artifact_names(client, run_id: str) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id)}


def _download(client, run_id: str, artifact: str, directory: str, names: set[str] | None = None) -> str:
    names = _artifact_names(client, run_id) if names is None else names
    if artifact not in names:
        raise ValueError(f"run {run_id} has no {artifact} artifact (it holds: {', '.join(sorted(names)) or 'nothing'})")
    return client.download_artifacts(run_id, artifact, directory)
