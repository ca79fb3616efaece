"""A latency table: one network's layers timed over a grid of widths in one target, calibrated end to end, kept on
disk (JSON, no pickle) so that every run on a like node reads it instead of timing.

A prediction sums each layer's latency at its widths (bilinear between grid points) and maps the sum through a
line fitted to whole networks of uniform widths measured in the same runtime: the line carries what the layers
alone miss (the input copy, pooling, residual additions, per-call overhead). The same widths give the same number
on every node that reads the table.

``table_for`` builds a table the first time a key is asked for, once per node: a lock beside the file makes
other processes wait for the first one's table instead of timing in parallel (which would also slow both).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from chex_tune.core._atomic import atomic_write
from chex_tune.train.latency.layers import LayerSpec, layer_specs
from chex_tune.train.latency.runtimes import RUNTIMES
from chex_tune.train.latency.target import LatencyTarget

SCHEMA = 1
CALIBRATION_FRACTIONS = (1.0, 0.75, 0.5, 0.35, 0.25, 0.125)  # uniform widths of the networks the line is fitted to
# ... rounded to multiples of 16 channels: ONNX Runtime's CPU kernels block channels by 8 or 16, and a network of
# other widths ran 3-4x slower end to end here (resnet18 at 28 px, 35% widths: benchmarks/latency_model.md), a
# step that a line through the layers' sum cannot follow; the table predicts aligned widths
CALIBRATION_MULTIPLE = 16


class LatencyTableError(ValueError):
    """A table file that cannot be read (damaged, or another table's); says how to rebuild it."""


@dataclass
class LatencyTable:
    key: str
    target: LatencyTarget
    layers: dict[str, int]  # layer name -> its shape's index in ``shapes``
    shapes: list[dict]  # {"spec", "in", "out", "ms", "spread"}: one grid per distinct layer shape
    fit: dict  # {"scale", "offset_ms", "points": [{"fraction", "measured_ms", "spread", "layers_ms", ...}]}
    build_seconds: float = 0.0

    # ---------------------------------------------------------------------------------- predictions
    def layers_ms(self, channels: dict[str, tuple[int, int]]) -> float:
        """The layers' latencies summed, each at its (input channels per group, output channels)."""
        total = 0.0
        for name, index in self.layers.items():
            shape = self.shapes[index]
            spec = LayerSpec.from_dict(shape["spec"])
            in_width, out_width = channels.get(name, (spec.in_channels, spec.out_channels))
            total += _bilinear(shape["in"], shape["out"], shape["ms"], in_width, out_width)
        return total

    def predict(self, channels: dict[str, tuple[int, int]]) -> float:
        """Milliseconds per call of the network with these layer widths (``SubmodelCost.layer_channels``)."""
        return self.fit["scale"] * self.layers_ms(channels) + self.fit["offset_ms"]

    def predict_model(self, model: nn.Module) -> float:
        """The prediction for a network of these layers at other widths (a compact model of the same recipe)."""
        example = torch.zeros(1, *self.target.input_shape)
        return self.predict({name: (spec.in_channels, spec.out_channels)
                             for name, spec in layer_specs(model, example).items()})

    @property
    def dense_ms(self) -> float:
        return self.predict({})

    @property
    def spread(self) -> dict[str, float]:
        """The grid measurements' spread (IQR / median): median and largest."""
        values = [v for shape in self.shapes for row in shape["spread"] for v in row]
        return {"median": float(np.median(values)), "max": float(np.max(values))}

    # ---------------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"schema": SCHEMA, "key": self.key, "target": asdict(self.target), "layers": self.layers,
                "shapes": self.shapes, "fit": self.fit, "build_seconds": self.build_seconds}

    def save(self, path: pathlib.Path) -> None:
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda tmp: pathlib.Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: pathlib.Path, key: str | None = None) -> LatencyTable:
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}, this chex-tune reads {SCHEMA}")
            target = LatencyTarget(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["target"].items()})
            table = cls(data["key"], target, {k: int(v) for k, v in data["layers"].items()}, list(data["shapes"]),
                        dict(data["fit"]), float(data.get("build_seconds", 0.0)))
            for shape in table.shapes:  # the parts a prediction reads
                LayerSpec.from_dict(shape["spec"])
                if np.asarray(shape["ms"], dtype=float).shape != (len(shape["in"]), len(shape["out"])):
                    raise ValueError("a grid's latencies do not match its widths")
            float(table.fit["scale"]), float(table.fit["offset_ms"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LatencyTableError(f"latency table {path} is damaged ({type(exc).__name__}: {exc}); rebuild it "
                                    "(chex-tune latency ... --rebuild, or delete the file)") from None
        if key is not None and table.key != key:
            raise LatencyTableError(f"latency table {path} holds key {table.key[:16]}..., not {key[:16]}... (a "
                                    "renamed or copied file?); rebuild it (chex-tune latency ... --rebuild)")
        return table


def _bilinear(ins: list[int], outs: list[int], ms: list[list[float]], in_width: float, out_width: float) -> float:
    """Interpolated within the grid, clamped at its edges."""
    rows = np.asarray(ms, dtype=float)
    along_out = [np.interp(out_width, outs, row) for row in rows]
    return float(np.interp(in_width, ins, along_out)) if len(ins) > 1 else float(along_out[0])


# -------------------------------------------------------------------------------------- building
def build_table(model: nn.Module, target: LatencyTarget, *, progress: Callable[[str], None] | None = None,
                key: str | None = None) -> LatencyTable:
    """Time ``model``'s layers over their grids and whole uniform-width copies of it, in ``target``'s runtime."""
    from chex_tune.train.onnx import require

    runtime = RUNTIMES[target.runtime]
    require(*runtime.needs)
    say = progress or (lambda message: None)
    started = time.perf_counter()
    example = torch.zeros(1, *target.input_shape)
    specs = layer_specs(model, example)
    distinct = list(dict.fromkeys(specs.values()))
    shapes = []
    points = sum(len(spec.in_grid()) * len(spec.out_grid()) for spec in distinct)
    done = 0
    for number, spec in enumerate(distinct, 1):
        ms, spread = [], []
        for in_width in spec.in_grid():
            row = [runtime.layer_ms(spec, in_width, out_width, target) for out_width in spec.out_grid()]
            ms.append([m for m, _ in row])
            spread.append([s for _, s in row])
        done += len(spec.in_grid()) * len(spec.out_grid())
        say(f"layer shape {number}/{len(distinct)} ({spec.kind} {spec.in_channels * spec.groups}->{spec.out_channels}"
            f" at {'x'.join(map(str, spec.input_size))}): {done}/{points} widths timed")
        shapes.append({"spec": spec.as_dict(), "in": spec.in_grid(), "out": spec.out_grid(), "ms": ms,
                       "spread": spread})
    layers = {name: distinct.index(spec) for name, spec in specs.items()}
    table = LatencyTable(key or target.key(_identity(specs)), target, layers, shapes, {"scale": 1.0, "offset_ms": 0.0})
    table.fit = calibrate(model, table, say)
    table.build_seconds = time.perf_counter() - started
    return table


def calibrate(model: nn.Module, table: LatencyTable, say: Callable[[str], None]) -> dict:
    """Measure whole networks at uniform widths and fit measured = scale * (sum of layers) + offset."""
    from chex_tune.core.explorer import ChannelExplorer

    target = table.target
    example = torch.zeros(1, *target.input_shape)
    explorer = ChannelExplorer(copy.deepcopy(model).eval(), example, total=1, sparsity=0.0, regrow_ratio=0.0,
                               allocator="uniform", verify=False)
    points = []
    for fraction in CALIBRATION_FRACTIONS:
        masks = uniform_masks(explorer, fraction, CALIBRATION_MULTIPLE)
        explorer.state.set_masks(masks)
        measured, spread = RUNTIMES[target.runtime].model_ms(explorer.compact(), target)
        layers = table.layers_ms(explorer.cost.layer_channels(masks))
        points.append({"fraction": fraction, "measured_ms": measured, "spread": spread, "layers_ms": layers})
        say(f"calibration {len(points)}/{len(CALIBRATION_FRACTIONS)}: uniform widths {fraction:.0%}: "
            f"{measured:.3g} ms measured, layers sum {layers:.3g} ms")
    scale, offset = np.polyfit([p["layers_ms"] for p in points], [p["measured_ms"] for p in points], 1)
    for point in points:
        point["predicted_ms"] = float(scale * point["layers_ms"] + offset)
        point["error"] = point["predicted_ms"] / point["measured_ms"] - 1
    return {"scale": float(scale), "offset_ms": float(offset), "points": points}


def uniform_masks(explorer, fraction: float, multiple: int = 1) -> list[torch.Tensor]:
    """Every group keeping ``fraction`` of its channels, rounded to ``multiple`` channels (at least one multiple; all
    of a group narrower than that), its first units: latency does not care which."""
    masks = []
    for group in explorer.state.groups:
        channels = max(multiple, round(fraction * group.channels / multiple) * multiple)
        units = max(1, min(group.channels, channels) // group.tile)
        mask = torch.zeros(group.units, dtype=torch.bool)
        mask[:units] = True
        masks.append(mask)
    return masks


def _identity(specs: dict[str, LayerSpec]) -> list:
    return [(name, spec) for name, spec in specs.items()]


# -------------------------------------------------------------------------------------- the cache
def cache_dir() -> pathlib.Path:
    """Where tables live: ``CHEX_TUNE_CACHE``/latency, else ~/.cache/chex-tune/latency."""
    root = os.environ.get("CHEX_TUNE_CACHE") or pathlib.Path.home() / ".cache" / "chex-tune"
    return pathlib.Path(root) / "latency"


def table_path(model: nn.Module, target: LatencyTarget, directory: pathlib.Path | None = None) -> tuple[pathlib.Path,
                                                                                                      str]:
    """The file ``model``'s table for ``target`` lives in, and its key."""
    specs = layer_specs(model, torch.zeros(1, *target.input_shape))
    key = target.key(_identity(specs))
    return (directory or cache_dir()) / f"{target.runtime}-{target.input_text}-{key[:20]}.json", key


def table_for(model: nn.Module, target: LatencyTarget, *, directory: pathlib.Path | None = None,
              rebuild: bool = False, progress: Callable[[str], None] | None = None) -> LatencyTable:
    """The table of ``model`` (its layers' shapes) for ``target``: read from disk, or built and saved first."""
    path, key = table_path(model, target, directory)
    if path.exists() and not rebuild:
        return LatencyTable.load(path, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        if path.exists() and not rebuild:  # another process built it while this one waited
            return LatencyTable.load(path, key)
        table = build_table(model, target, progress=progress, key=key)
        table.save(path)
    return table


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
