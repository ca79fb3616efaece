"""Every error a user can cause exits 2 with one clear line naming the value; bugs keep their traceback.

One table of bad inputs, each run through the CLI's ``main([...])`` in this process; then the damaged
files ``load_compact`` and ``--resume`` meet, the unreachable servers (refused before MLflow or Ray is
asked), and the other side of the rule: an unexpected error still raises with its traceback.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
import torch

from chex_tune import load_compact
from chex_tune.cli import main

GOOD_SPACE = "fixed:\n  model: test_resnet\n  dataset: synthetic\nsearch:\n  sparsity: {low: 0.3, high: 0.8}\n"



def resnet18_stem_and_head(classes: int) -> bytes:
    """The two tensors of a timm resnet18 state_dict (1 input channel, timm's 7x7 stem) that tell a run its input
    channels, stem and classes, saved with torch.save: all a refusal reads before the weights would load."""
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(64, 1, 7, 7), "fc.weight": torch.zeros(classes, 512)}, buffer)
    return buffer.getvalue()


# name -> file content written under tmp_path before the case runs (bytes for binary files)
FILES = {
    "good.yaml": GOOD_SPACE,
    "syntax.yaml": "fixed:\n  model: resnet18\nsearch:\n  sparsity: {low: 0.3, high: [0.8}\n",
    "tabs.yaml": "search:\n\tsparsity: {low: 0.3, high: 0.8}\n",
    "empty.yaml": "# only a comment\n",
    "list.yaml": "- sparsity\n- period\n",
    "top_key.yaml": "serch:\n  sparsity: {low: 0.3, high: 0.8}\n",
    "fixed_key.yaml": "fixed:\n  sparsty: 0.5\nsearch:\n  period: {low: 10, high: 100, int: true}\n",
    "param_key.yaml": "search:\n  sparsity: {lo: 0.3, high: 0.8}\n",
    "range.yaml": "search:\n  sparsity: {low: 0.3, high: 1.5}\n",
    "type.yaml": "search:\n  sparsity: {low: abc, high: 0.8}\n",
    "not_searchable.yaml": "search:\n  epochs: {low: 1, high: 5, int: true}\n",
    "objective.yaml": GOOD_SPACE + "objectives: [val_acc:max, flops:min]\n",
    "binary.yaml": b"\xff\xfe\x00\x01 not text",
    "config_list.yaml": "- epochs: 3\n",
    "config_type.yaml": "lr: fast\n",
    "config_syntax.yaml": "epochs: 3\nlr: [0.1\n",
    "a_file": "I am a file, not a folder\n",
    "weights.pt": b"PK\x03\x04 a zip archive cut short",
    "grey_resnet18.pt": resnet18_stem_and_head(10),
    "five_classes.pt": resnet18_stem_and_head(5),
    "small_stem.yaml": "fixed:\n  model: resnet18\n  dataset: synthetic\n  stem: small\n"
                       "search:\n  sparsity: {low: 0.3, high: 0.8}\n",
}

TRAIN = ["train", "--model", "test_resnet", "--dataset", "synthetic", "--stem", "timm", "--epochs", "1",
         "--batch-size", "32", "--train-subset", "64", "--val-size", "32", "--device", "cpu"]
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
# (id, argv with {tmp} for the temporary folder, what the one error line must contain[, a mark])
CASES = [
    # search space files: missing, unreadable, not YAML, not a space
    ("space-missing", ["sweep", "{tmp}/nope.yaml"], "search space file '{tmp}/nope.yaml' not found"),
    ("space-directory", ["sweep", "{tmp}"], "search space file '{tmp}' is a directory; give a file"),
    ("space-binary", ["sweep", "{tmp}/binary.yaml"], "binary.yaml' is not a text file (byte 0 is not UTF-8)"),
    ("space-under-a-file", ["sweep", "{tmp}/a_file/space.yaml"], "a_file/space.yaml' not found"),
    ("space-yaml-syntax", ["sweep", "{tmp}/syntax.yaml"],
     "syntax.yaml, line 4, column 34: not valid YAML: expected ',' or ']', but got '}' "
     "(while parsing a flow sequence at line 4)"),
    ("space-yaml-tabs", ["sweep", "{tmp}/tabs.yaml"],
     "tabs.yaml, line 2, column 1: not valid YAML: found character '\\t' that cannot start any token"),
    ("space-empty", ["sweep", "{tmp}/empty.yaml"], "empty.yaml: the file is empty"),
    ("space-a-list", ["sweep", "{tmp}/list.yaml"], "a search space is a mapping with keys fixed, search"),
    ("space-unknown-top-key", ["sweep", "{tmp}/top_key.yaml"], "unknown top-level key(s) ['serch']; allowed: fixed"),
    ("space-unknown-setting", ["sweep", "{tmp}/fixed_key.yaml"], "'sparsty' (did you mean 'sparsity'?)"),
    ("space-unknown-param-key", ["sweep", "{tmp}/param_key.yaml"],
     "sparsity: unknown key(s) ['lo']; allowed: low, high, log, int, choices"),
    ("space-out-of-range", ["sweep", "{tmp}/range.yaml"], "sparsity must be in [0.0, 1.0), got 1.5"),
    ("space-wrong-type", ["sweep", "{tmp}/type.yaml"], "sparsity: low must be a number, got 'abc'"),
    ("space-not-searchable", ["sweep", "{tmp}/not_searchable.yaml"], "'epochs' cannot be searched; searchable:"),
    ("space-unknown-objective", ["sweep", "{tmp}/objective.yaml"], "unknown objective metric 'flops'; choose from:"),
    # sweep flags
    ("sweep-trials-text", ["sweep", "{tmp}/good.yaml", "--trials", "many"], "argument --trials: invalid int value"),
    ("sweep-sampler", ["sweep", "{tmp}/good.yaml", "--optuna-sampler", "grid"],
     "unknown --optuna-sampler 'grid'; choose one of: tpe, nsga2, random"),
    ("sweep-trials-zero", ["sweep", "{tmp}/good.yaml", "--trials", "0"], "--trials must be a positive integer, got 0"),
    ("sweep-cpus-zero", ["sweep", "{tmp}/good.yaml", "--cpus-per-trial", "0"], "--cpus-per-trial must be > 0, got 0.0"),
    ("sweep-workers-zero", ["sweep", "{tmp}/good.yaml", "--workers-per-trial", "0"],
     "--workers-per-trial must be a positive integer, got 0"),
    ("sweep-batch-does-not-split", ["sweep", "{tmp}/good.yaml", "--workers-per-trial", "3"],
     "batch_size 128 does not split evenly across workers_per_trial 3: give a batch size that is a multiple of it"),
    # inheriting sweeps: a parent needs a trained start and a MACs budget; a ladder is of MACs budgets
    ("sweep-inherit-without-init", ["sweep", "{tmp}/good.yaml", "--inherit"],
     "--inherit needs a trained start: give --init WEIGHTS (the first trials start from it"),
    ("sweep-ladder-not-fractions", ["sweep", "{tmp}/good.yaml", "--ladder", "0.5,2"],
     "--ladder must be MACs budgets, fractions in (0, 1) like 0.5,0.25,0.12, got '0.5,2'"),
    ("sweep-ladder-without-macs-target", ["sweep", "{tmp}/good.yaml", "--ladder", "0.5,0.25"],
     "--ladder sets the first trials' macs_target, which {tmp}/good.yaml does not search as a range"),
    # --max-drop: points of val accuracy below the dense model, which a sweep has only from a trained start
    ("sweep-max-drop-negative", ["sweep", "{tmp}/good.yaml", "--max-drop", "-1"],
     "--max-drop must be a number of percentage points >= 0 (like 1.5: at most 1.5 points below the dense model's "
     "val accuracy), got -1.0"),
    ("sweep-max-drop-text", ["sweep", "{tmp}/good.yaml", "--max-drop", "lots"],
     "argument --max-drop: invalid float value: 'lots'"),
    ("sweep-max-drop-without-init", ["sweep", "{tmp}/good.yaml", "--max-drop", "1"],
     "--max-drop 1 needs a dense reference: give --init WEIGHTS (the trained dense model, evaluated once before the "
     "trials start); a sweep from scratch has none"),
    ("family-max-drop-negative", ["family", "--dataset", "synthetic", "--max-drop", "-0.5", "--store", "{tmp}/store"],
     "--max-drop must be a number of percentage points >= 0 (like 1.5: at most 1.5 points below the dense model's "
     "val accuracy), got -0.5"),
    ("family-max-drop-text", ["family", "--max-drop", "1pt"], "argument --max-drop: invalid float value: '1pt'"),
    # a family's start: the trained model must exist; --resume needs a family to continue
    ("family-init-missing", ["family", "--init", "{tmp}/nope.pt", "--dataset", "synthetic", "--store", "{tmp}/store"],
     "--init '{tmp}/nope.pt': no such file"),
    ("family-resume-nothing", ["family", "--resume", "--experiment", "none", "--dataset", "synthetic", "--store",
                               "{tmp}/store"], "--resume: no experiment 'none' in sqlite:///"),
    ("sweep-gpus-per-worker-without-a-gpu", ["sweep", "{tmp}/good.yaml", "--workers-per-trial", "2",
                                             "--gpus-per-worker", "1"],
     "--gpus-per-worker 1: this machine has no CUDA GPU, so no trial could start", NO_GPU),
    ("sweep-worker-restarts-negative", ["sweep", "{tmp}/good.yaml", "--worker-restarts", "-1"],
     "--worker-restarts must be an integer >= 0, got -1"),
    ("sweep-gpus-without-a-gpu", ["sweep", "{tmp}/good.yaml", "--gpus-per-trial", "1"],
     "--gpus-per-trial 1: this machine has no CUDA GPU, so no trial could start", NO_GPU),
    ("sweep-ray-unreachable", ["sweep", "{tmp}/good.yaml", "--ray-address", "127.0.0.1:9"],
     "--ray-address 127.0.0.1:9: no Ray cluster answers there (Connection refused)"),
    ("sweep-ray-malformed", ["sweep", "{tmp}/good.yaml", "--ray-address", "my-cluster"],
     "--ray-address 'my-cluster': expected HOST:PORT"),
    ("sweep-tracking-unreachable", ["sweep", "{tmp}/good.yaml", "--tracking-uri", NOWHERE],
     f"--tracking-uri {NOWHERE}: no MLflow tracking server answers there (Connection refused)"),
    ("sweep-file-store", ["sweep", "{tmp}/good.yaml", "--tracking-uri", "{tmp}/mlruns"],
     "is a folder, MLflow's old file store, which MLflow 3 no longer reads"),
    # train: config files, --set, values
    ("train-config-missing", [*TRAIN, "--config", "{tmp}/nope.yaml", "--out", "{tmp}/run"],
     "--config '{tmp}/nope.yaml' not found"),
    ("train-config-syntax", [*TRAIN, "--config", "{tmp}/config_syntax.yaml", "--out", "{tmp}/run"],
     "config_syntax.yaml, line 3, column 1: not valid YAML: expected ',' or ']'"),
    ("train-config-list", [*TRAIN, "--config", "{tmp}/config_list.yaml", "--out", "{tmp}/run"],
     "must hold a mapping of settings (key: value lines), got list"),
    ("train-config-wrong-type", [*TRAIN, "--config", "{tmp}/config_type.yaml", "--out", "{tmp}/run"],
     "lr must be in (0.0, inf), got 'fast'"),
    ("train-set-no-equals", [*TRAIN, "--set", "scorer", "--out", "{tmp}/run"],
     "--set 'scorer' must look like KEY=VALUE (e.g. --set scorer=l1)"),
    ("train-set-unknown", [*TRAIN, "--set", "regrow=0.1", "--out", "{tmp}/run"],
     "unknown setting(s) 'regrow' (did you mean 'regrow_ratio'?)"),
    ("train-set-bad-yaml", [*TRAIN, "--set", "scorer=[l1", "--out", "{tmp}/run"],
     "--set 'scorer=[l1': '[l1' is not a value"),
    ("train-sparsity-range", [*TRAIN, "--sparsity", "1.5", "--out", "{tmp}/run"],
     "sparsity must be in [0.0, 1.0), got 1.5"),
    ("train-lr-range", [*TRAIN, "--set", "lr=-0.1", "--out", "{tmp}/run"], "lr must be in (0.0, inf), got -0.1"),
    ("train-latency-target-text", [*TRAIN, "--latency-target", "fast", "--out", "{tmp}/run"],
     "latency_target must be a fraction of the dense latency in (0, 1] or milliseconds such as '4ms', got 'fast'"),
    ("train-latency-budget-without-target", [*TRAIN, "--budget", "latency", "--out", "{tmp}/run"],
     "--budget latency needs --latency-target"),
    ("train-two-budgets", [*TRAIN, "--macs-target", "0.5", "--latency-target", "0.3", "--out", "{tmp}/run"],
     "give one budget: macs_target (0.5) or latency_target (0.3), not both"),
    ("train-latency-runtime", [*TRAIN, "--latency-runtime", "tensorrt", "--out", "{tmp}/run"],
     "argument --latency-runtime: invalid choice: 'tensorrt'"),
    ("train-unknown-scorer", [*TRAIN, "--set", "scorer=l3", "--out", "{tmp}/run"],
     "unknown scorer 'l3'; choose one of: css"),
    ("train-epochs-text", [*TRAIN, "--epochs", "three", "--out", "{tmp}/run"], "argument --epochs: invalid int value"),
    ("train-out-is-a-file", [*TRAIN, "--out", "{tmp}/a_file"], "--out {tmp}/a_file is a file; give a folder"),
    # a trained start: missing, damaged, of another model, not a model at all, an MLflow URI nowhere
    ("train-init-missing", [*TRAIN, "--init", "{tmp}/nope.pt", "--out", "{tmp}/run"],
     "--init '{tmp}/nope.pt': no such file; give the trained dense model's weights"),
    ("train-init-damaged", [*TRAIN, "--init", "{tmp}/weights.pt", "--out", "{tmp}/run"],
     "{tmp}/weights.pt is damaged (a truncated zip archive"),
    ("train-init-a-yaml", [*TRAIN, "--init", "{tmp}/good.yaml", "--out", "{tmp}/run"],
     "{tmp}/good.yaml is damaged or not a weights file"),
    ("train-init-bad-uri", [*TRAIN, "--init", "models:/r18", "--out", "{tmp}/run"],
     "--init 'models:/r18': expected runs:/RUN_ID, models:/NAME@ALIAS or models:/NAME/VERSION"),
    ("sweep-init-missing", ["sweep", "{tmp}/good.yaml", "--init", "{tmp}/nope.pt", "--store", "{tmp}/store"],
     "--init '{tmp}/nope.pt': no such file"),
    # weights that contradict a setting: refused naming the flag that fits them, before any run
    ("train-init-stem", [*TRAIN, "--model", "resnet18", "--stem", "small", "--init", "{tmp}/grey_resnet18.pt",
                         "--out", "{tmp}/run"],
     "--init {tmp}/grey_resnet18.pt: its weights were trained with the timm stem (conv1.weight (64, 1, 7, 7)) and "
     "this run sets stem small; pass --stem timm, or leave stem out and --init sets it"),
    ("family-init-stem", ["family", "--init", "{tmp}/grey_resnet18.pt", "--dataset", "synthetic", "--stem", "small",
                          "--store", "{tmp}/store"], "this run sets stem small; pass --stem timm, or leave stem out"),
    ("family-init-in-chans", ["family", "--init", "{tmp}/grey_resnet18.pt", "--dataset", "synthetic", "--set",
                              "in_chans=3", "--store", "{tmp}/store"],
     "--init {tmp}/grey_resnet18.pt: its weights take 1 input channel (conv1.weight (64, 1, 7, 7)) and this run sets "
     "in_chans 3; pass --set in_chans=1, or leave in_chans out and --init sets it"),
    ("family-init-classes", ["family", "--init", "{tmp}/five_classes.pt", "--dataset", "synthetic", "--store",
                             "{tmp}/store"],
     "--init {tmp}/five_classes.pt: its weights classify 5 classes (fc.weight (5, 512)) and dataset synthetic has "
     "10; give the dataset they were trained on (--dataset, --data-dir)"),
    ("sweep-init-stem", ["sweep", "{tmp}/small_stem.yaml", "--init", "{tmp}/grey_resnet18.pt", "--store",
                         "{tmp}/store"], "this run sets stem small; pass 'stem: timm' under the space's fixed, or"),
    ("train-in-chans", [*TRAIN, "--set", "in_chans=2", "--out", "{tmp}/run"],
     "in_chans 2 does not fit dataset synthetic's 3-channel images: give 3 (its own) or 1 (its channels averaged)"),
    # the fine-tune space searches distillation, whose teacher is the trained start: without --init, refused
    ("sweep-finetune-space-without-init", ["sweep", "fashion_mnist_resnet18_finetune", "--store", "{tmp}/store"],
     "distill 0.25 needs init: the teacher is the trained model it starts from (give --init WEIGHTS"),
    ("train-imagefolder-missing", [*TRAIN[:3], "--dataset", "imagefolder", "--data-dir", "{tmp}/images",
                                   "--out", "{tmp}/run"], "{tmp}/images"),
    # inspect
    ("inspect-size", ["inspect", "resnet18", "--size", "-3"], "argument --size: must be a positive integer, got '-3'"),
    ("inspect-sparsity", ["inspect", "resnet18", "--size", "32", "--sparsity", "1.5"],
     "sparsity must be in [0.0, 1.0), got 1.5"),
    ("inspect-model", ["inspect", "resnet_18"], "unknown timm model 'resnet_18'"),
    # pareto, export, ui: stores and servers
    ("pareto-tracking-unreachable", ["pareto", "exp", "--tracking-uri", NOWHERE],
     f"--tracking-uri {NOWHERE}: no MLflow tracking server answers there (Connection refused)"),
    ("pareto-store-missing", ["pareto", "exp", "--store", "{tmp}/store"], "no MLflow store at {tmp}/store/mlflow.db"),
    ("pareto-sqlite-missing", ["pareto", "exp", "--tracking-uri", "sqlite:///{tmp}/none.db"],
     "no MLflow database at {tmp}/none.db"),
    ("pareto-format", ["pareto", "exp", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ("export-tracking-unreachable", ["export", "exp", "--run", "abc", "--format", "state", "-o", "{tmp}/m.pt",
                                     "--tracking-uri", NOWHERE],
     f"--tracking-uri {NOWHERE}: no MLflow tracking server answers there (Connection refused)"),
    ("export-register-without-alias", ["export", "exp", "--run", "abc", "--format", "state", "-o", "{tmp}/m.pt",
                                       "--register", "tiny"], "--register NAME and --alias ALIAS go together"),
    ("export-reserved-alias", ["export", "exp", "--run", "abc", "--format", "state", "-o", "{tmp}/m.pt",
                               "--register", "tiny", "--alias", "latest"], "--alias 'latest' is reserved by MLflow"),
    ("export-no-choice", ["export", "exp", "--format", "state", "-o", "{tmp}/m.pt"],
     "one of the arguments --run --max-macs --max-latency-ms --min-acc is required"),
    ("export-latency-with-a-count-suffix", ["export", "exp", "--max-latency-ms", "2.5M", "--format", "state",
                                            "-o", "{tmp}/m.pt"],
     "--max-latency-ms must be a positive number of milliseconds like 2.5, got '2.5M'"),
    ("export-macs-text", ["export", "exp", "--max-macs", "lots", "--format", "state", "-o", "{tmp}/m.pt"],
     "--max-macs must be a positive number like 2.5e6 or 2.5M (suffixes K, M, G), got 'lots'"),
    ("export-int8-not-onnx", ["export", "exp", "--run", "abc", "--format", "torchscript", "-o", "{tmp}/m.pt",
                              "--quantize", "int8"],
     "--quantize int8 writes a quantized ONNX file (ONNX Runtime's static quantization); format 'torchscript' "
     "cannot hold it: use --format onnx"),
    ("export-int8-unknown", ["export", "exp", "--run", "abc", "--format", "onnx", "-o", "{tmp}/m.onnx",
                             "--quantize", "int4"], "--quantize 'int4': choose one of: int8"),
    ("export-int8-calibration-zero", ["export", "exp", "--run", "abc", "--format", "onnx", "-o", "{tmp}/m.onnx",
                                      "--quantize", "int8", "--calibration", "0"],
     "--calibration 0: give a positive number of training images (default 256)"),
    ("export-calibration-without-int8", ["export", "exp", "--run", "abc", "--format", "onnx", "-o", "{tmp}/m.onnx",
                                         "--calibration", "64"],
     "--calibration 64 is for an INT8 export: add --quantize int8 (and --format onnx)"),
    ("export-int8-fallback", ["export", "exp", "--run", "abc", "--format", "onnx", "-o", "{tmp}/m.onnx",
                              "--quantize", "int8", "--int8-fallback", "fp16"],
     "--int8-fallback 'fp16': choose one of: fp32"),
    ("ui-store-missing", ["ui", "--store", "{tmp}/store"], "no MLflow store at {tmp}/store/mlflow.db"),
    # latency tables: the target
    ("latency-input-without-width", ["latency", "--model", "test_resnet", "--input", "1x3x224"],
     "--input must be BxCxHxW with positive integers (e.g. 1x3x224x224), got '1x3x224'"),
    ("latency-runtime", ["latency", "--model", "test_resnet", "--input", "1x3x16x16", "--runtime", "tensorrt"],
     "unknown runtime 'tensorrt'; choose one of: onnxruntime, torch"),
    ("latency-model", ["latency", "--model", "resnet181", "--input", "1x3x16x16", "--cache", "{tmp}/tables"],
     "unknown timm model 'resnet181'; closest names: resnet18"),
]


@pytest.fixture
def files(tmp_path, monkeypatch):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "CHEX_TUNE_TRACEBACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("argv", "message"), [pytest.param(argv, message, id=name, marks=marks)
                                              for name, argv, message, *marks in CASES])
def test_bad_input_exits_2_with_one_clear_line(files, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(files)) for arg in argv]
    code = run_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert message.replace("{tmp}", str(files)) in last
    if not last.startswith("chex-tune: error") and "argument" not in last:  # not argparse (usage + one line)
        assert len(err.strip().splitlines()) == 1, err
        assert last.startswith(f"chex-tune {argv[0]}: error: ")


def test_the_table_covers_at_least_25_inputs():
    names = [case[0] for case in CASES]
    assert len(names) >= 25 and len(set(names)) == len(names)


# ------------------------------------------------------------------------------------ damaged files
def compact_file(tmp_path):
    from chex_tune import ChannelExplorer, save_compact
    from chex_tune.train.models import create_model, model_recipe

    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=10, in_chans=1, stem="timm")
    recipe = model_recipe("test_resnet", num_classes=10, in_chans=1, stem="timm")
    ex = ChannelExplorer(model, torch.randn(2, 1, 32, 32), sparsity=0.5, regrow_ratio=0.0, total=4, verify=False,
                         **recipe)
    path = tmp_path / "good.pt"
    save_compact(ex.compact(), path)
    return path


DAMAGES = {
    "truncated": (lambda data, tmp: data[: len(data) // 2], "is damaged (a truncated zip archive"),
    "empty": (lambda data, tmp: b"", "is damaged or not a chex-tune compact model (empty, not a torch.save zip"),
    "garbage": (lambda data, tmp: b"not a model at all" * 10, "is damaged or not a chex-tune compact model (180 bytes"),
    "flipped-bytes": (lambda data, tmp: data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:],
                      "is damaged (corrupted: "),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_load_compact_says_a_damaged_file_is_damaged(tmp_path, damage):
    good = compact_file(tmp_path)
    change, message = DAMAGES[damage]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(change(good.read_bytes(), tmp_path))
    with pytest.raises(ValueError) as info:
        load_compact(bad)
    assert message in str(info.value) and str(bad) in str(info.value)
    assert "weights_only" not in str(info.value) and "Weights only load failed" not in str(info.value)


@pytest.mark.parametrize(("payload", "message"), [
    (lambda: torch.nn.Linear(2, 2), "holds pickled Python objects (e.g. a whole module saved with torch.save(model))"),
    (lambda: torch.zeros(3), "is not a chex-tune compact model (format 'Tensor', expected 'chex_tune.compact/1'"),
    (lambda: {"weights": torch.zeros(3)}, "is not a chex-tune compact model (format None"),
    (lambda: {"format": "chex_tune.compact/1", "builder": "timm"}, "is damaged: a chex-tune compact model without "
                                                                   "model_name, model_kwargs, input_shape, removed"),
], ids=["pickled-module", "a-tensor", "another-dict", "missing-keys"])
def test_load_compact_says_what_else_a_file_is(tmp_path, payload, message):
    path = tmp_path / "other.pt"
    torch.save(payload(), path)
    with pytest.raises(ValueError) as info:
        load_compact(path)
    assert message in str(info.value) and "Re-running `torch.load`" not in str(info.value)


def test_load_compact_weights_that_do_not_fit_are_damage(tmp_path):
    path = compact_file(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.weight"] = torch.zeros(3, 3)
    torch.save(payload, path)
    with pytest.raises(ValueError, match="is damaged: its weights do not fit the model its recipe describes"):
        load_compact(path)


def test_resume_from_a_damaged_checkpoint_exits_2(files, capsys):
    out = files / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x00" * 64)
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint.pt'} is damaged or not a chex-tune checkpoint (64 bytes" in err
    assert "delete it to train from the start, or use another --out" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ servers: refused early
def test_an_unreachable_tracking_server_is_refused_before_mlflow_is_asked(files, capsys, monkeypatch):
    import chex_tune.tuning.track.store as store

    def asked(*args, **kwargs):
        raise AssertionError("MLflow was asked (minutes of HTTP retries) before the server was checked")

    monkeypatch.setattr(store, "open_store", asked)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", NOWHERE)  # the variable is checked like the flag
    assert main(["pareto", "exp"]) == 2
    assert f"MLFLOW_TRACKING_URI {NOWHERE}: no MLflow tracking server answers there" in capsys.readouterr().err


def test_an_unreachable_ray_cluster_is_refused_before_ray_starts(files, capsys, monkeypatch):
    ray = pytest.importorskip("ray")

    def init(*args, **kwargs):
        raise AssertionError("ray.init was called before the address was checked")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    assert main(["sweep", str(files / "good.yaml")]) == 2
    assert "RAY_ADDRESS 127.0.0.1:9: no Ray cluster answers there" in capsys.readouterr().err


def test_a_listening_address_passes_the_checks():
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from chex_tune.tuning.connect import check_ray_address, check_tracking_uri

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        check_tracking_uri(f"http://127.0.0.1:{port}")  # any HTTP answer: a server is there
        check_ray_address(f"127.0.0.1:{port}")  # something listens
        check_ray_address("auto")
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ValueError, match=f"--ray-address ray://127.0.0.1:{port}: no Ray cluster answers"):
        check_ray_address(f"ray://127.0.0.1:{port}")


# ------------------------------------------------------------------------------------ bugs keep tracebacks
@pytest.mark.parametrize("error", [
    lambda: __import__("json").loads("{"),  # a ValueError raised outside chex_tune's code
    lambda: (_ for _ in ()).throw(RuntimeError("an internal failure")),
    lambda: {}["missing"],
], ids=["ValueError-from-a-library", "RuntimeError", "KeyError"])
def test_unexpected_errors_keep_their_traceback(files, monkeypatch, error):
    from chex_tune.cli import inspect_cmd

    monkeypatch.setattr(inspect_cmd, "run", lambda args: error())
    with pytest.raises((ValueError, RuntimeError, KeyError)):
        main(["inspect", "resnet18"])


def test_chex_tune_traceback_shows_a_user_errors_traceback(files, monkeypatch):
    monkeypatch.setenv("CHEX_TUNE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="sparsity must be in"):
        main(["inspect", "resnet18", "--size", "32", "--sparsity", "1.5"])


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "chex_tune.cli", "sweep", "nope.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("chex-tune sweep: error: search space file 'nope.yaml' not found; give a YAML file "
                                   "or the name of a shipped space: fashion_mnist_mobilenetv2.yaml, "
                                   "fashion_mnist_resnet18.yaml, fashion_mnist_resnet18_finetune.yaml, "
                                   "fashion_mnist_resnet18_latency.yaml, imagefolder_resnet50.yaml")


@pytest.mark.parametrize(("code", "shown"), [
    ("raise ValueError('sparsity must be in [0, 1), got 2')", True),  # the package's own check: a message
    ("raise FileNotFoundError('search space file x.yaml not found')", True),
    ("a, b = [1]", False),  # an operation that failed in the package's code: a bug
    ("int('x')", False),
    ("raise RuntimeError('internal')", False),
])
def test_only_the_packages_own_raise_statements_are_user_errors(code, shown):
    from chex_tune.cli import PACKAGE_DIR, user_error_message

    try:
        exec(compile(code, str(PACKAGE_DIR / "somewhere.py"), "exec"), {})
    except Exception as exc:  # noqa: BLE001
        message = user_error_message(exc)
    assert (message is not None) == shown
    if shown:
        assert message in code


def test_a_start_already_smaller_than_a_family_level_exits_2_naming_it(tmp_path, capsys):
    """A compact model as a family's --init (a member, say) can only be compressed further: a level at or above its
    own MACs is refused before any run, with the level it got."""
    start = compact_file(tmp_path)
    code = run_main(["family", "--init", str(start), "--dataset", "synthetic", "--model", "test_resnet", "--levels",
                     "0.9", "--store", str(tmp_path / "store")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in last
    assert re.search(rf"--init {re.escape(str(start))} is a compact model at [0-9.]+% of the dense MACs: continuing "
                     r"it needs a smaller macs_target \(got 0\.9\)", last), last

