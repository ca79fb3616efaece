"""Exporting a trial of a sweep: choose it by a constraint (``choose``), write it in a format (``formats``), score
the written file (``trial``), register it (``registry``).

    constraint = Constraint.parse(max_macs="2.5M")
    trials = read_trials(client, "fashion_mnist_resnet18", objectives=constraint.objectives)
    row, why = choose(trials, constraint)
    result = export_run(client, row, "onnx", "model.onnx")
    int8 = export_run(client, row, "onnx", "edge.onnx", quantize_to="int8")  # INT8 file, checked against FP32 (int8)
"""

from chex_tune.tuning.export.choose import Constraint, choose, describe, find_run, parse_accuracy, parse_milliseconds
from chex_tune.tuning.export.formats import FORMATS, load_exported, write_export
from chex_tune.tuning.export.registry import check_alias, register
from chex_tune.tuning.export.trial import ExportResult, export_run

__all__ = ["FORMATS", "Constraint", "ExportResult", "check_alias", "choose", "describe", "export_run", "find_run",
           "load_exported", "parse_accuracy", "parse_milliseconds", "register", "write_export"]
