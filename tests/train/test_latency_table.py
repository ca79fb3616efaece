"""Latency tables: keyed by target and network, built once per node, damaged files named, predictions that follow
the widths a sub-model keeps.

Most tests time with a stand-in runtime whose "latencies" are a formula, so what they assert is exact and no
timing decides a test; two build real tables of a tiny network (PyTorch eager and ONNX Runtime) and check their
form, not their speed.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from chex_tune.cli import main
from chex_tune.core.explorer import ChannelExplorer
from chex_tune.train.latency import LatencyTableError, LatencyTarget, layers, runtimes, table_for, table_path
from chex_tune.train.latency import table as table_module
from chex_tune.train.latency.layers import LayerSpec, layer_specs
from chex_tune.train.models import create_model

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def model():
    return create_model("test_resnet", num_classes=10, in_chans=3, stem="timm").eval()


def layer_formula(spec: LayerSpec, in_width: int, out_width: int) -> float:
    cin, cout, _ = runtimes.layer_channels(spec, in_width, out_width)
    return 1e-3 * cin * cout * spec.input_size[0] * spec.input_size[1] / max(spec.stride) ** 2 + 0.01


@pytest.fixture
def formula_runtime(monkeypatch):
    """A runtime whose layer latency is linear in each width (so the grid's interpolation is exact) and whose whole
    network costs 2 x its layers + 0.5 ms: a table must then predict every width exactly."""
    builds = []

    def layer_ms(spec, in_width, out_width, target):
        return layer_formula(spec, in_width, out_width), 0.01

    def model_ms(network, target):
        specs = layer_specs(network, torch.zeros(1, *target.input_shape))
        return 2 * sum(layer_formula(s, s.in_channels, s.out_channels) for s in specs.values()) + 0.5, 0.02

    fake = runtimes.Runtime(layer_ms, model_ms)
    monkeypatch.setitem(runtimes.RUNTIMES, "torch", fake)
    original = table_module.build_table

    def counting_build(*args, **kwargs):
        builds.append(time.monotonic())
        time.sleep(0.2)  # long enough for a second caller to arrive while the first builds
        return original(*args, **kwargs)

    monkeypatch.setattr(table_module, "build_table", counting_build)
    return builds


def test_a_table_is_never_shared_by_another_runtime_batch_input_threads_or_network(model, tmp_path):
    base = LatencyTarget(runtime="torch", input_shape=SHAPE)
    path, key = table_path(model, base, tmp_path)
    assert table_path(model, LatencyTarget(runtime="torch", input_shape=SHAPE), tmp_path) == (path, key)
    others = [LatencyTarget(runtime="onnxruntime", input_shape=SHAPE), LatencyTarget(runtime="torch", input_shape=SHAPE,
              batch_size=8), LatencyTarget(runtime="torch", input_shape=(3, 32, 32)),
              LatencyTarget(runtime="torch", input_shape=SHAPE, threads=2)]
    found = {table_path(model, target, tmp_path) for target in others}
    assert len(found) == 4 and all(p != path and k != key for p, k in found)
    wider = create_model("test_resnet", num_classes=20, in_chans=3, stem="timm")  # another classifier
    assert table_path(wider, base, tmp_path)[1] != key


def test_target_input_text_and_its_errors():
    target = LatencyTarget.parse_input("8x3x224x224", runtime="torch")
    assert (target.batch_size, target.input_shape, target.input_text) == (8, (3, 224, 224), "8x3x224x224")
    with pytest.raises(ValueError, match=r"--input must be BxCxHxW .* got '1x3x224'"):
        LatencyTarget.parse_input("1x3x224")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; choose one of: onnxruntime, torch"):
        LatencyTarget(runtime="tensorrt")
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        LatencyTarget(threads=0)


def test_a_table_is_built_once_then_read_and_predicts_every_width(model, tmp_path, formula_runtime):
    target = LatencyTarget(runtime="torch", input_shape=SHAPE)
    table = table_for(model, target, directory=tmp_path)
    again = table_for(model, target, directory=tmp_path)
    assert len(formula_runtime) == 1 and again.to_dict() == table.to_dict()
    assert table.fit["scale"] == pytest.approx(2.0) and table.fit["offset_ms"] == pytest.approx(0.5)
    # a sub-model the explorer selects: predicted from its masks and from its compact model, both exactly the formula
    explorer = ChannelExplorer(create_model("test_resnet", num_classes=10, in_chans=3, stem="timm"),
                               torch.zeros(2, *SHAPE), total=1, sparsity=0.6, regrow_ratio=0.0, verify=False)
    from_masks = table.predict(explorer.cost.layer_channels(explorer.state.masks))
    small = explorer.compact()
    exact = runtimes.RUNTIMES["torch"].model_ms(small, target)[0]
    assert from_masks == pytest.approx(exact) and table.predict_model(small) == pytest.approx(exact)
    assert table.dense_ms == pytest.approx(runtimes.RUNTIMES["torch"].model_ms(model, target)[0])
    assert from_masks < 0.7 * table.dense_ms


def test_the_width_multiple_is_the_smallest_the_runtime_runs_at_full_speed(model, tmp_path, monkeypatch):
    """A runtime that runs any width not a multiple of 8 three times slower: the table measures 8, calibrates on
    multiples of 8 and predicts them exactly."""
    def aligned(network, target):
        return all(s.out_channels % 8 == 0 for s in layer_specs(network, torch.zeros(1, *target.input_shape)).values()
                   if s.kind == "conv")

    def model_ms(network, target):
        specs = layer_specs(network, torch.zeros(1, *target.input_shape))
        work = 2 * sum(layer_formula(s, s.in_channels, s.out_channels) for s in specs.values()) + 0.5
        return work * (1 if aligned(network, target) else 3), 0.02

    monkeypatch.setitem(runtimes.RUNTIMES, "torch", runtimes.Runtime(
        lambda spec, i, o, target: (layer_formula(spec, i, o), 0.01), model_ms))
    target = LatencyTarget(runtime="torch", input_shape=SHAPE)
    table = table_for(model, target, directory=tmp_path)
    assert table.width_multiple == 8
    assert [p["multiple"] for p in table.alignment["probes"]] == [1, 2, 4, 8, 16]
    assert [round(p["ratio"], 3) for p in table.alignment["probes"]][3:] == [1.0, 1.0]
    assert all(p["multiple"] == 8 for p in table.fit["points"])
    explorer = ChannelExplorer(create_model("test_resnet", num_classes=10, in_chans=3, stem="timm"),
                               torch.zeros(2, *SHAPE), total=1, sparsity=0.5, regrow_ratio=0.0, width_multiple=8,
                               verify=False)
    small = explorer.compact()
    assert aligned(small, target)
    assert table.predict_model(small) == pytest.approx(model_ms(small, target)[0])


def test_two_processes_asking_at_once_build_one_table(model, tmp_path, formula_runtime):
    target = LatencyTarget(runtime="torch", input_shape=SHAPE)
    tables = []
    threads = [threading.Thread(target=lambda: tables.append(table_for(model, target, directory=tmp_path)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(formula_runtime) == 1 and tables[0].to_dict() == tables[1].to_dict()


def test_a_damaged_table_is_named_and_rebuilt_on_request(model, tmp_path, formula_runtime, capsys):
    target = LatencyTarget(runtime="torch", input_shape=SHAPE, threads=1)
    path, _ = table_path(model, target, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"schema": 1, "key": "abc", "shapes": [')
    with pytest.raises(LatencyTableError, match=rf"latency table {path} is damaged \(JSONDecodeError.*--rebuild"):
        table_for(model, target, directory=tmp_path)
    argv = ["latency", "--model", "test_resnet", "--num-classes", "10", "--stem", "timm", "--input", "1x3x16x16",
            "--runtime", "torch", "--threads", "1", "--cache", str(tmp_path)]
    assert main(argv) == 2
    assert f"chex-tune latency: error: latency table {path} is damaged" in capsys.readouterr().err
    assert main([*argv, "--rebuild"]) == 0
    out = capsys.readouterr().out
    assert f"built {path}" in out and "a line through them: measured = 2.000 x sum of layers + 0.5 ms" in out
    assert "width multiple: 1 (" in out
    assert main(argv) == 0 and f"read {path}" in capsys.readouterr().out
    assert len(formula_runtime) == 1
    other = table_for(model, target, directory=tmp_path)  # a table copied over another key's file is refused
    other_path, _ = table_path(model, LatencyTarget(runtime="torch", input_shape=SHAPE, threads=2), tmp_path)
    other.save(other_path)
    with pytest.raises(LatencyTableError, match="holds key .* not "):
        table_for(model, LatencyTarget(runtime="torch", input_shape=SHAPE, threads=2), directory=tmp_path)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_real_table_times_every_layer_shape_and_calibrates(model, tmp_path, monkeypatch, runtime):
    monkeypatch.setattr(table_module, "CALIBRATION_FRACTIONS", (1.0, 0.5, 0.25))
    monkeypatch.setattr(layers, "GRID_FRACTIONS", (0.5, 1.0))  # 2 x 2 widths a layer shape: the form, quickly
    monkeypatch.setattr(runtimes, "LAYER_RUN_S", (0.0, 0.002, 0.02))
    monkeypatch.setattr(runtimes, "MODEL_RUN_S", (0.0, 0.01, 0.1))
    messages = []
    table = table_for(model, LatencyTarget(runtime=runtime, input_shape=SHAPE, threads=1), directory=tmp_path,
                      progress=messages.append)
    specs = layer_specs(model, torch.zeros(1, *SHAPE))
    assert set(table.layers) == set(specs) and len(table.shapes) == len(set(specs.values()))
    for shape in table.shapes:
        spec = LayerSpec.from_dict(shape["spec"])
        assert shape["out"] == sorted({max(1, round(spec.out_channels * f)) for f in (0.5, 1.0)})
        assert len(shape["ms"]) == len(shape["in"]) and all(len(row) == len(shape["out"]) for row in shape["ms"])
        assert all(ms > 0 for row in shape["ms"] for ms in row)
    assert [p["fraction"] for p in table.fit["points"]] == [1.0, 0.5, 0.25]
    assert all(p["measured_ms"] > 0 for p in table.fit["points"]) and table.dense_ms > 0
    assert any(m.startswith("calibration 3/3: uniform widths 25%") for m in messages)
    assert [p["multiple"] for p in table.alignment["probes"]] == [1, 2, 4, 8, 16]
    assert table.width_multiple in (1, 2, 4, 8, 16)
    assert all(q["measured_ms"] > 0 for p in table.alignment["probes"] for q in p["points"])
    assert any(m.startswith(f"width multiple: {table.width_multiple} (") for m in messages)
