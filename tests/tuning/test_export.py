"""Choosing a trial by a constraint, exporting it (state, TorchScript, ONNX), scoring the file, registering it.

One tiny real run (timm's test_resnet, one epoch on synthetic data, a few seconds) is trained once and
logged the way a sweep logs a trial; the other trials of the hand-made store are metrics only, placed
around it so that each constraint has a known answer.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from chex_tune import load_compact
from chex_tune.cli import main
from chex_tune.config import RunConfig
from chex_tune.tuning.export import Constraint, choose, export_run, parse_accuracy, parse_milliseconds, register
from chex_tune.tuning.track.runs import read_trials

TINY = {"dataset": "synthetic", "model": "test_resnet", "stem": "timm", "epochs": 1, "train_subset": 64,
        "val_size": 64, "batch_size": 32, "sparsity": 0.5, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model this small trains and exports faster on one thread; two spin against each other on a busy box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from chex_tune.train.loop import train

    out = tmp_path_factory.mktemp("run")
    return out, train(RunConfig.from_dict(TINY), out).record()  # metrics.json's layout: val_acc, macs, latency_ms...


def log_trial(client, experiment_id, parent, name, metrics, *, sparsity="0.5", status="FINISHED", files=()):
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, run_name=name, tags={
        "mlflow.parentRunId": parent, "chex.trial_id": name, "chex.sweep": "s", "chex.searched": "sparsity",
        "chex.trial_number": name[-1]})
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 1) for k, v in metrics.items()],
                     params=[Param("sparsity", sparsity), Param("macs_target", "None")])
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained):
    """Experiment "exp": the real run R between cheaper/weaker A, dominated C, and better/costlier E and B."""
    from mlflow import MlflowClient

    from chex_tune.tuning.track.recorder import log_pytorch_model

    run_dir, result = trained
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("exp", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="s", tags={"chex.role": "sweep", "chex.sweep": "s"}).info.run_id
    acc, macs, latency = result["val_acc"], result["macs"], result["latency_ms"]
    real = {k: result[k] for k in ("val_acc", "test_acc", "macs", "dense_macs", "params", "latency_ms")}
    files = (run_dir / "compact.pt", run_dir / "config.yaml")
    ids = {"R": log_trial(client, experiment, parent, "t1", real, files=files)}
    log_pytorch_model(uri, ids["R"], run_dir / "compact.pt")  # as the sweep's callback does

    def fake(a, m, **kw):  # accuracy and cost relative to the real run
        return {"val_acc": a, "test_acc": a, "macs": m * macs, "params": m * real["params"], "latency_ms": m * latency}

    ids["A"] = log_trial(client, experiment, parent, "t2", fake(acc / 2, 0.6), files=files)  # no mlflow model
    ids["C"] = log_trial(client, experiment, parent, "t3", fake(acc * 0.8, 1.2))  # dominated by R
    ids["E"] = log_trial(client, experiment, parent, "t4", fake(acc + (1 - acc) / 3, 2.0), sparsity="0.0")
    ids["B"] = log_trial(client, experiment, parent, "t5", fake(acc + 2 * (1 - acc) / 3, 4.0))
    ids["F"] = log_trial(client, experiment, parent, "t6", {}, status="FAILED")
    return {"root": root, "uri": uri, "client": client, "ids": ids, "result": result, "run_dir": run_dir,
            "experiment_id": experiment}


def chosen(store, **bound) -> str:
    constraint = Constraint.parse(**bound)
    trials = read_trials(store["client"], "exp", objectives=constraint.objectives)
    return next(k for k, v in store["ids"].items() if v == choose(trials, constraint)[0].run_id)


# ------------------------------------------------------------------------------------ the choice
def test_accuracies_parse():
    assert parse_accuracy("0.9") == parse_accuracy("90%") == pytest.approx(0.9)
    for bad in ("90", "0", "x", "-5%"):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            parse_accuracy(bad)


def test_latency_bounds_parse_as_milliseconds_only():
    assert parse_milliseconds("2.5") == parse_milliseconds(" 2.5ms ") == parse_milliseconds("2.5 MS") == 2.5
    for bad in ("2.5M", "1K", "0", "-1", "ms", "nan", "inf", "fast"):  # a count's suffix is not a time unit
        with pytest.raises(ValueError, match=rf"--max-latency-ms must be a positive number of milliseconds .* "
                                             rf"got {re.escape(repr(bad))}"):
            parse_milliseconds(bad)


def test_the_most_accurate_front_member_under_a_cost_bound(store):
    macs, latency = store["result"]["macs"], store["result"]["latency_ms"]
    assert chosen(store, max_macs=str(macs)) == "R"  # the bound is inclusive
    assert chosen(store, max_macs=str(macs - 1)) == "A"
    assert chosen(store, max_macs=str(1.5 * macs)) == "R"  # C fits too but R is more accurate
    assert chosen(store, max_macs=str(3 * macs)) == "E"
    assert chosen(store, max_macs="1G") == "B"
    assert chosen(store, max_latency_ms=str(2.5 * latency)) == "E"


def test_the_cheapest_front_member_above_an_accuracy_floor(store):
    acc = store["result"]["val_acc"]
    assert chosen(store, min_acc=str(acc)) == "R"
    assert chosen(store, min_acc=str(acc + 0.01)) == "E"
    assert chosen(store, min_acc="0.0001") == "A"


def test_when_no_front_member_meets_the_bound_the_nearest_are_listed(store):
    ids, macs = store["ids"], store["result"]["macs"]
    with pytest.raises(ValueError, match="no trial of experiment 'exp' on the val_acc/macs front has macs <=") as info:
        chosen(store, max_macs=str(0.1 * macs))
    nearest = str(info.value).split("nearest: ")[1]
    assert nearest.index(ids["A"]) < nearest.index(ids["R"]) < nearest.index(ids["E"])
    assert ids["B"] not in nearest and ids["C"] not in nearest  # three at most, front members only


# ------------------------------------------------------------------------------------ the files
def test_state_export_is_the_compact_model_and_scores_its_logged_accuracy(store, tmp_path):
    row = next(r for r in read_trials(store["client"], "exp").rows if r.run_id == store["ids"]["R"])
    result = export_run(store["client"], row, "state", tmp_path / "out" / "model.pt")
    assert result.exported_val_acc == result.logged_val_acc == store["result"]["val_acc"]
    exported, original = load_compact(result.path), load_compact(store["run_dir"] / "compact.pt")
    x = torch.randn(3, *exported.chex_recipe["input_shape"][1:])
    with torch.no_grad():
        torch.testing.assert_close(exported(x), original(x), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_torchscript_and_onnx_compute_what_the_compact_model_does(store, tmp_path, fmt):
    from chex_tune.tuning.export import load_exported

    row = next(r for r in read_trials(store["client"], "exp").rows if r.run_id == store["ids"]["R"])
    result = export_run(store["client"], row, fmt, tmp_path / f"model.{fmt}")
    model = load_compact(store["run_dir"] / "compact.pt")
    exported = load_exported(result.path, fmt)
    for batch in (1, 5):  # the batch dimension is dynamic (traced and exported at 2)
        x = torch.randn(batch, *model.chex_recipe["input_shape"][1:])
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)
    assert abs(result.exported_val_acc - result.logged_val_acc) <= 1 / 64  # one image at most (rounding)
    # the export checked itself against the compact model and timed itself in its runtime; both logged on the run
    check = result.check
    assert check.passed and 0 <= check.max_abs_diff <= 1e-4
    assert check.runtime == {"onnx": "ONNX Runtime (CPU)", "torchscript": "TorchScript"}[fmt]
    assert check.latency_ms > 0 and check.pytorch_latency_ms > 0 and check.threads == 1
    logged = store["client"].get_run(store["ids"]["R"]).data.metrics
    assert logged[f"export.{fmt}.max_abs_diff"] == pytest.approx(check.max_abs_diff)
    assert logged[f"export.{fmt}.latency_ms"] == pytest.approx(check.latency_ms)
    if fmt == "onnx":  # the dynamic dimension has a name a user can read in Netron or onnxruntime
        import onnx

        graph = onnx.load(str(result.path)).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# ------------------------------------------------------------------------------------ the registry
def test_registered_alias_resolves_to_the_exported_run(store):
    client, ids = store["client"], store["ids"]
    trials = read_trials(client, "exp")
    rows = {row.run_id: row for row in trials.rows}
    first = register(client, rows[ids["R"]], store["experiment_id"], "tiny", "champion")
    found = client.get_model_version_by_alias("tiny", "champion")
    assert (found.version, found.run_id, found.tags["chex.source"]) == (first.version, ids["R"], "mlflow.pytorch")
    import mlflow.pytorch

    from chex_tune.tuning.track.store import using_tracking_uri

    with using_tracking_uri(store["uri"]):  # the alias serves the run's mlflow.pytorch model
        served = mlflow.pytorch.load_model("models:/tiny@champion")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(served(x), load_compact(store["run_dir"] / "compact.pt")(x))
    # the model's environment does not need chex-tune: it loads in a process where chex_tune cannot be imported
    downloads = store["root"] / "downloads"
    downloads.mkdir(exist_ok=True)
    import mlflow.pyfunc

    with using_tracking_uri(store["uri"]):
        requirements = pathlib.Path(mlflow.pyfunc.get_model_dependencies("models:/tiny@champion"))
    assert "chex-tune" not in requirements.read_text() and "torch==" in requirements.read_text()
    x_file = downloads / "x.pt"
    torch.save({"x": x, "y": load_compact(store["run_dir"] / "compact.pt")(x).detach()}, x_file)
    # Any import of chex_tune now fails. Lightning is blocked too: mlflow.pytorch imports it if present, and it
    # pulls in torchvision, whose CPU import needs chex_tune's fix in this environment (environment.md).
    script = ("import sys; sys.modules['chex_tune'] = sys.modules['pytorch_lightning'] = None\n"
              "import torch, mlflow, mlflow.pytorch\n"
              f"mlflow.set_tracking_uri({store['uri']!r})\n"
              "model = mlflow.pytorch.load_model('models:/tiny@champion')\n"
              f"data = torch.load({str(x_file)!r}, weights_only=True)\n"
              "torch.testing.assert_close(model(data['x']), data['y'], rtol=1e-4, atol=1e-5)\nprint('served')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=downloads, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert done.returncode == 0 and "served" in done.stdout, done.stderr
    # a run without an mlflow model registers its compact.pt; the alias moves to the new version
    second = register(client, rows[ids["A"]], store["experiment_id"], "tiny", "champion")
    found = client.get_model_version_by_alias("tiny", "champion")
    assert int(second.version) == int(first.version) + 1 and found.version == second.version
    assert found.run_id == ids["A"] and found.source.endswith("/compact.pt")


def test_export_command_chooses_writes_scores_and_registers(store, tmp_path, capsys):
    out = tmp_path / "best.pt"
    macs = store["result"]["macs"]
    assert main(["export", "exp", "--max-macs", f"{macs / 1e6 + 1e-4}M", "--format", "state", "-o", str(out),
                 "--register", "cli-model", "--alias", "prod", "--store", str(store["root"])]) == 0
    text = capsys.readouterr().out
    assert f"run {store['ids']['R']} (trial 1)" in text and "the most accurate of" in text
    acc = store["result"]["val_acc"]
    assert f"validation accuracy of the written file: {acc:.4f} (logged val_acc {acc:.4f}" in text
    assert "models:/cli-model@prod" in text and out.exists()
    version = store["client"].get_model_version_by_alias("cli-model", "prod")
    assert version.run_id == store["ids"]["R"]


def test_export_command_prints_its_check_and_fails_when_the_outputs_differ(store, tmp_path, capsys, monkeypatch):
    from chex_tune.tuning.export import check

    out = tmp_path / "m.onnx"
    args = ["export", "exp", "--run", store["ids"]["R"], "--format", "onnx", "-o", str(out), "--store",
            str(store["root"])]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"outputs against PyTorch: largest absolute difference \S+ over 8 random inputs \(passed\)", text)
    assert re.search(r"latency, batch 1, 1 thread\(s\): ONNX Runtime \(CPU\) \S+ ms \(IQR \S+% of it\), PyTorch "
                     r"eager \S+ ms", text)
    monkeypatch.setattr(check, "TOLERANCE", -1.0)  # no difference passes: what a wrong graph would get
    assert main([*args, "--register", "never", "--alias", "prod"]) == 1
    text = capsys.readouterr().out
    assert "FAILED: above the tolerance -1" in text and "do not deploy it" in text and out.exists()
    with pytest.raises(Exception, match="never"):  # a file that failed its check is not registered
        store["client"].get_registered_model("never")


def test_check_export_finds_a_model_that_computes_something_else():
    from chex_tune.tuning.export.check import check_export

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    same = check_export(model, model, [2, 3, 8, 8], "PyTorch eager")
    assert same.passed and same.max_abs_diff == 0.0
    differs = check_export(model, other, [2, 3, 8, 8], "PyTorch eager")
    with torch.no_grad():
        x = torch.randn([8, 3, 8, 8], generator=torch.Generator().manual_seed(0))
        expected = (other(x) - model(x)).abs().max().item()
    assert not differs.passed and differs.max_abs_diff == pytest.approx(expected)
    assert set(differs.metrics("onnx")) == {f"export.onnx.{k}" for k in (
        "max_abs_diff", "latency_ms", "latency_spread", "pytorch_latency_ms")}


def test_export_by_run_id_says_when_the_file_scores_differently_from_the_log(store, tmp_path, capsys):
    # trial A carries the real model but a made-up val_acc: the check must notice
    out = tmp_path / "a.pt"
    assert main(["export", "exp", "--run", store["ids"]["A"], "--format", "state", "-o", str(out),
                 "--store", str(store["root"])]) == 0
    text = capsys.readouterr().out
    assert "chosen as asked for with --run" in text and "note: they differ by more than 1 point" in text
    assert f"validation accuracy of the written file: {store['result']['val_acc']:.4f}" in text


def test_export_scores_the_file_with_a_users_function(store, tmp_path):
    row = next(r for r in read_trials(store["client"], "exp").rows if r.run_id == store["ids"]["R"])
    seen = []

    def my_metrics(model):
        seen.append(model)
        return {"val_acc": 0.25, "val_map": 0.5}

    result = export_run(store["client"], row, "state", tmp_path / "m.pt", evaluate=my_metrics)
    assert (result.exported_val_acc, result.exported_metrics) == (0.25, {"val_acc": 0.25, "val_map": 0.5})
    assert result.note == "evaluated with test_export_scores_the_file_with_a_users_function.<locals>.my_metrics"
    assert type(seen[0]) is type(load_compact(store["run_dir"] / "compact.pt"))
    with pytest.raises(ValueError, match=r"--evaluate: cannot import evaluate function 'no_such_module:score'"):
        export_run(store["client"], row, "state", tmp_path / "n.pt", evaluate="no_such_module:score")
    assert not (tmp_path / "n.pt").exists()  # a bad function fails before anything is written


# ------------------------------------------------------------------------- the input the file expects
def test_fashion_mnist_preprocessing_names_its_statistics_size_channels_and_classes():
    from chex_tune.tuning.export.preprocessing import preprocessing_of

    config = RunConfig.from_dict({"dataset": "fashion-mnist", "model": "resnet18"})
    props = preprocessing_of(config, [1, 1, 28, 28]).metadata()
    assert props["mean"] == "[0.286]" and props["std"] == "[0.353]"
    assert props["input_size"] == "28x28" and props["input_shape"] == '["batch", 1, 28, 28]'
    assert props["channel_order"] == "grey" and props["dataset"] == "fashion-mnist"
    assert props["input"] == "float32 NCHW, pixels scaled to [0, 1] (x / 255)"
    assert props["normalization"] == "not in the graph: feed (x - mean) / std per channel, x in [0, 1]"
    assert json.loads(props["class_names"]) == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                "Shirt", "Sneaker", "Bag", "Ankle boot"]
    three = preprocessing_of(config, [1, 3, 28, 28], fold=True)  # a 3-channel model fed the grey channel repeated
    assert three.mean == (0.286,) * 3 and three.std == (0.353,) * 3
    assert three.channel_order == "grey, repeated on 3 channels"
    assert three.metadata()["normalization"] == "in the graph: feed pixels in [0, 1]"


def test_a_users_own_trainable_has_no_normalisation_to_fold():
    from chex_tune.tuning.export.preprocessing import preprocessing_of

    assert preprocessing_of(None, [1, 1, 8, 8]).metadata() == {
        "input": "float32 NCHW, pixels scaled to [0, 1] (x / 255)", "input_shape": '["batch", 1, 8, 8]',
        "input_size": "8x8",
        "normalization": "unknown (a run of your own trainable): feed what your loop fed the model"}
    with pytest.raises(ValueError, match=r"--with-normalization needs the run's normalisation, and this run was "
                                         r"trained by your own trainable"):
        preprocessing_of(None, [1, 1, 8, 8], fold=True)


def _synthetic_statistics(store):
    """The run's mean and std, per channel, as the training loop normalised its batches."""
    from chex_tune.train.data import load_data

    data = load_data(RunConfig.from_dict(TINY).train, "cpu")
    pixels = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, data.in_chans, 1, 2)
    fed = data.normalise(pixels)[0, :, 0].double()  # pixels 0 and 255: (p / 255 - mean) / std
    std = 1 / (fed[:, 1] - fed[:, 0])
    return (-fed[:, 0] * std).float(), std.float()


def test_onnx_metadata_says_what_input_the_file_expects(store, tmp_path):
    import onnxruntime

    row = next(r for r in read_trials(store["client"], "exp").rows if r.run_id == store["ids"]["R"])
    result = export_run(store["client"], row, "onnx", tmp_path / "model.onnx")
    props = onnxruntime.InferenceSession(str(result.path)).get_modelmeta().custom_metadata_map
    mean, std = _synthetic_statistics(store)
    shape = load_compact(store["run_dir"] / "compact.pt").chex_recipe["input_shape"]
    # written with 6 decimals, from float32 arithmetic: 1e-6 apart at most
    assert torch.tensor(json.loads(props["mean"])) == pytest.approx(mean, abs=1e-6)
    assert torch.tensor(json.loads(props["std"])) == pytest.approx(std, abs=1e-6)
    assert props["input_shape"] == json.dumps(["batch", *shape[1:]])
    assert props["channel_order"] == "RGB" and props["dataset"] == "synthetic" and "class_names" not in props
    assert props["normalization"].startswith("not in the graph")


def test_with_normalization_the_onnx_file_takes_raw_pixels(store, tmp_path, capsys):
    import onnxruntime

    out = tmp_path / "raw.onnx"
    assert main(["export", "exp", "--run", store["ids"]["R"], "--format", "onnx", "-o", str(out), "--store",
                 str(store["root"]), "--with-normalization"]) == 0
    text = capsys.readouterr().out
    mean, std = _synthetic_statistics(store)
    assert re.search(r"normalisation: mean \[[^]]+\], std \[[^]]+\]; in the graph: feed pixels in \[0, 1\]", text)
    assert "outputs against PyTorch" in text and "(passed)" in text
    acc = store["result"]["val_acc"]
    found = float(re.search(r"validation accuracy of the written file: (\S+)", text).group(1))
    assert abs(found - acc) <= 1 / 64 and "fed pixels in [0, 1]" in text  # scored on raw pixels: the logged figure
    model = load_compact(store["run_dir"] / "compact.pt").eval()
    raw = torch.rand(5, *model.chex_recipe["input_shape"][1:], generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(out))
    assert session.get_modelmeta().custom_metadata_map["normalization"] == "in the graph: feed pixels in [0, 1]"
    with torch.no_grad():
        expected = model((raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
    got = torch.from_numpy(session.run(None, {"images": raw.numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_with_normalization_is_refused_for_a_format_that_cannot_hold_it(store, tmp_path, capsys):
    assert main(["export", "exp", "--run", store["ids"]["R"], "--format", "torchscript", "-o", str(tmp_path / "m.pt"),
                 "--store", str(store["root"]), "--with-normalization"]) == 2
    assert ("--with-normalization puts the normalisation into the graph of an ONNX file; format 'torchscript' cannot "
            "hold it: use --format onnx, or export without it") in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
    row = next(r for r in read_trials(store["client"], "exp").rows if r.run_id == store["ids"]["R"])
    with pytest.raises(ValueError, match=r"format 'state' cannot hold it"):  # the Python call refuses the same
        export_run(store["client"], row, "state", tmp_path / "m.pt", with_normalization=True)


# ------------------------------------------------------------------------------------ INT8
@pytest.fixture
def quick_timing(monkeypatch):
    """Latencies timed for a fraction of a second: these tests check that they are measured, not their values."""
    from chex_tune.train.latency import runtimes

    monkeypatch.setattr(runtimes, "MODEL_RUN_S", (0.02, 0.05, 0.2))


def _row(store, key="R"):
    return next(r for r in read_trials(store["client"], "exp").rows if r.run_id == store["ids"][key])


def _onnx_top1(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0].argmax(1)


@pytest.mark.usefixtures("quick_timing")
def test_int8_export_is_a_qdq_graph_with_int8_weights_that_agrees_with_fp32(store, tmp_path):
    import onnx

    from chex_tune.train.data import load_data
    from chex_tune.tuning.export.int8 import AGREEMENT, float_ops

    result = export_run(store["client"], _row(store), "onnx", tmp_path / "m.onnx", quantize_to="int8",
                        calibration=32)
    assert result.path == tmp_path / "m.onnx" and result.fp32_path == tmp_path / "m.fp32.onnx"
    graph = onnx.load(str(result.path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    # every Conv and Gemm takes its weight from a DequantizeLinear of an int8 initializer, one scale per channel
    initializers = {t.name: t for t in graph.initializer}
    dequantized = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}
    weighted = [node for node in graph.node if node.op_type in ("Conv", "Gemm")]
    assert len(weighted) == ops.count("Conv") + ops.count("Gemm") > 0 and not float_ops(onnx.load(str(result.path)))
    for node in weighted:
        weight, scale = (initializers[name] for name in dequantized[node.input[1]].input[:2])
        assert weight.data_type == onnx.TensorProto.INT8
        assert onnx.numpy_helper.to_array(scale).size == weight.dims[0] > 1  # per output channel
    # the INT8 file keeps the FP32 file's input metadata and says how it was quantized
    import onnxruntime

    props, fp32_props = (onnxruntime.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
                         for path in (result.path, result.fp32_path))
    assert all(props[key] == value for key, value in fp32_props.items())
    assert props["quantization"].startswith("int8, ONNX Runtime static QDQ: per-channel int8 weights")
    assert props["quantization"].endswith("from 32 training images")
    # the FP32 twin is the graph export writes without --quantize: no quantization nodes
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in onnx.load(str(result.fp32_path)).graph.node}
    # agreement and accuracies, recomputed here on the validation split
    data = load_data(RunConfig.from_dict(TINY).train, "cpu")
    images, labels = (torch.cat(parts) for parts in zip(*data.eval_batches("val")))
    int8, fp32 = _onnx_top1(result.path, images), _onnx_top1(result.fp32_path, images)
    check = result.int8
    assert check.images == len(labels) == 64 and check.calibration == 32
    assert check.top1_agreement == pytest.approx((int8 == fp32).mean()) and check.top1_agreement >= AGREEMENT
    assert check.val_acc == pytest.approx((int8 == labels.numpy()).mean())
    assert check.fp32_val_acc == pytest.approx((fp32 == labels.numpy()).mean())
    assert abs(check.fp32_val_acc - result.logged_val_acc) <= 1 / 64 and result.exported_val_acc == check.val_acc
    assert check.passed and check.latency_ms > 0 and check.fp32_latency_ms > 0 and check.threads == 1
    logged = store["client"].get_run(store["ids"]["R"]).data.metrics
    for name in ("top1_agreement", "val_acc", "fp32_val_acc", "latency_ms", "fp32_latency_ms", "calibration"):
        assert logged[f"export.onnx_int8.{name}"] == pytest.approx(getattr(check, name))
    assert logged["export.onnx.max_abs_diff"] == pytest.approx(result.check.max_abs_diff)  # the FP32 file's check


def _first_quantization(path):
    """(scale, zero point) of the graph's first QuantizeLinear: the one before its first convolution."""
    import onnx

    model = onnx.load(str(path))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    return float(values[node.input[1]]), int(values[node.input[2]])


@pytest.mark.usefixtures("quick_timing")
def test_int8_with_normalization_calibrates_on_raw_pixels(store, tmp_path):
    # The folded file normalises raw pixels itself, so its first quantized tensor is (x - mean) / std: fed the same
    # calibration images as raw pixels, it gets the range the plain file gets from normalised ones. Fed normalised
    # images, it would see them normalised twice (a range std times wider, shifted).
    normalised = export_run(store["client"], _row(store), "onnx", tmp_path / "n.onnx", quantize_to="int8",
                            calibration=32)
    raw = export_run(store["client"], _row(store), "onnx", tmp_path / "r.onnx", quantize_to="int8", calibration=32,
                     with_normalization=True)
    (scale, zero), (raw_scale, raw_zero) = _first_quantization(normalised.path), _first_quantization(raw.path)
    assert zero > 0 and raw_zero == zero and raw_scale == pytest.approx(scale, rel=1e-4)
    assert raw.int8.passed and raw.int8.fp32_val_acc == pytest.approx(normalised.int8.fp32_val_acc)


@pytest.mark.usefixtures("quick_timing")
def test_int8_export_command_checks_logs_and_registers_the_int8_file(store, tmp_path, capsys, monkeypatch):
    from chex_tune.tuning.export import int8

    out = tmp_path / "edge.onnx"
    args = ["export", "exp", "--run", store["ids"]["R"], "--format", "onnx", "-o", str(out), "--store",
            str(store["root"]), "--quantize", "int8", "--calibration", "32"]
    assert main([*args, "--register", "tiny-int8", "--alias", "edge"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (onnx, INT8, " in text and f"quantized from {tmp_path / 'edge.fp32.onnx'} (FP32, " in text
    assert re.search(r"INT8 against FP32 \(calibrated on 32 training images\): top-1 agreement \S+ over 64 "
                     r"validation images \(passed\); validation accuracy INT8 \S+, FP32 \S+", text)
    assert re.search(r"latency, batch 1, 1 thread\(s\), ONNX Runtime \(CPU\): INT8 \S+ ms \(IQR \S+% of it\), "
                     r"FP32 \S+ ms \(\S+x\)", text)
    assert "FP32 outputs against PyTorch: largest absolute difference" in text
    client = store["client"]
    version = client.get_model_version_by_alias("tiny-int8", "edge")
    assert version.run_id == store["ids"]["R"] and version.tags["chex.format"] == "onnx-int8"
    assert version.source.endswith("/export/edge.onnx") and version.tags["chex.source"] == "export/edge.onnx"
    fetched = client.download_artifacts(store["ids"]["R"], "export/edge.onnx", str(tmp_path / "fetched"))
    assert pathlib.Path(fetched).read_bytes() == out.read_bytes()  # the registered file is the INT8 one
    assert float(version.tags["export.onnx_int8.top1_agreement"]) >= int8.AGREEMENT
    monkeypatch.setattr(int8, "AGREEMENT", 1.01)  # no agreement passes: what a badly calibrated file would get
    assert main([*args, "--register", "never-int8", "--alias", "edge"]) == 1
    text = capsys.readouterr().out
    assert "(FAILED: below 1.01)" in text and "is kept and not registered" in text and out.exists()
    with pytest.raises(Exception, match="never-int8"):
        client.get_registered_model("never-int8")


def test_int8_refuses_what_it_cannot_calibrate(store, tmp_path, capsys):
    from chex_tune.tuning.export.int8 import DEFAULT_CALIBRATION

    base = ["export", "exp", "--format", "onnx", "--quantize", "int8", "--store", str(store["root"])]
    out = tmp_path / "m.onnx"
    assert main([*base, "--run", store["ids"]["R"], "-o", str(out), "--calibration", "65"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--calibration 65: the run's training split (synthetic) has 64 images; give at most 64")
    assert DEFAULT_CALIBRATION > 64  # the default asks for more than this tiny run has: refused the same way
    assert main([*base, "--run", store["ids"]["R"], "-o", str(out)]) == 2
    assert f"--calibration {DEFAULT_CALIBRATION}: the run's training split" in capsys.readouterr().err
    # a run of a user's own trainable: a compact model and no config.yaml
    experiment = store["client"].get_experiment_by_name("exp").experiment_id
    parent = store["client"].get_run(store["ids"]["R"]).data.tags["mlflow.parentRunId"]
    own = log_trial(store["client"], experiment, parent, "t7", {"val_acc": 0.1, "macs": 1.0},
                    files=(store["run_dir"] / "compact.pt",))
    assert main([*base, "--run", own, "-o", str(out), "--calibration", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(
        f"--quantize int8 calibrates on the run's training images, and run {own} was trained by your own trainable "
        "(no dataset in its config.yaml): export it with --format onnx (FP32) and quantize that file with "
        "onnxruntime.quantization.quantize_static on your own images")
    assert not out.exists() and not (tmp_path / "m.fp32.onnx").exists()  # refused before anything was written
    store["client"].delete_run(own)  # the other tests' fronts stay as they were


@pytest.mark.usefixtures("quick_timing")
def test_int8_names_an_op_left_in_float_and_falls_back_only_when_asked(store, tmp_path, capsys, monkeypatch):
    import onnx
    import onnxruntime.quantization

    real = onnxruntime.quantization.quantize_static

    def keep_first_conv_float(model_input, *args, **kwargs):  # what ONNX Runtime does with an op it cannot quantize
        first = next(n.name for n in onnx.load(str(model_input)).graph.node if n.op_type == "Conv")
        kept.append(first)
        return real(model_input, *args, **{**kwargs, "nodes_to_exclude": [first]})

    kept = []
    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", keep_first_conv_float)
    out = tmp_path / "m.onnx"
    args = ["export", "exp", "--run", store["ids"]["R"], "--format", "onnx", "-o", str(out), "--store",
            str(store["root"]), "--quantize", "int8", "--calibration", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"ONNX Runtime left 1 weighted op(s) in float: {kept[0]} (Conv)" in err
    assert "pass --int8-fallback fp32 to export the FP32 file instead, or export without --quantize" in err
    assert not out.exists()
    assert main([*args, "--int8-fallback", "fp32"]) == 0
    text = capsys.readouterr().out
    assert f"note: INT8 fell back to FP32: ONNX Runtime left 1 weighted op(s) in float: {kept[0]} (Conv)" in text
    assert "INT8 against FP32" not in text and "(passed)" in text  # the FP32 file's own check
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in onnx.load(str(out)).graph.node}

    def fails(*args, **kwargs):
        raise RuntimeError("no QDQ rule for op FancyOp")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", fails)
    assert main(args) == 2
    assert ("ONNX Runtime could not quantize the graph: RuntimeError: no QDQ rule for op FancyOp"
            in capsys.readouterr().err)
