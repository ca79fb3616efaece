"""A latency table: one network's layers timed over a grid of widths in one target, calibrated end to end, kept on
disk (JSON, no pickle) so that every run on a like node reads it instead of timing.

A prediction sums each layer's latency at its widths (bilinear between grid points) and maps the sum through a
calibration curve: whole networks of uniform widths measured end to end in the same runtime, joined piecewise
linearly by their layers' sum. The curve carries what the layers alone miss (the input copy, pooling, residual
additions, per-call overhead, layers timed alone paying a run's overhead each). The same widths give the same
number on every node that reads the table.

A runtime's kernels block channels: ONNX Runtime's CPU kernels ran networks of widths that were not multiples of
16 several times slower than aligned ones (benchmarks/latency_model.md), a step no sum of layers follows. So a
table also measures which channel multiple its runtime needs (``width_multiple``: the smallest whose networks run
as fast, per unit of work, as the widest tried) and is calibrated on, and predicts, widths at that multiple; a
latency budget rounds widths to it.

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

SCHEMA = 2
CALIBRATION_FRACTIONS = (1.0, 0.75, 0.5, 0.35, 0.25, 0.125, 0.0625)  # uniform widths of the calibration networks
# Channel multiples tried for the runtime's alignment, each on uniform networks at ALIGNMENT_FRACTIONS of the widths
# (odd multiples, so that 8 is not tried on widths that are also multiples of 16); the widest is the reference. A
# multiple is aligned when its slowest network runs within ALIGNMENT_TOLERANCE of the reference's, per unit of work.
# One fraction and 10% were too lax: ONNX Runtime (1 thread) ran resnet18 at 224 px in multiples of 4 within 10% at
# half width, then 1.75x slower than multiples of 16 at 35% (benchmarks/latency_model_notes.md)
ALIGNMENT_MULTIPLES = (1, 2, 4, 8, 16)
ALIGNMENT_FRACTIONS = (0.5, 0.3)
ALIGNMENT_TOLERANCE = 0.05


class LatencyTableError(ValueError):
    """A table file that cannot be read (damaged, or another table's); says how to rebuild it."""


@dataclass
class LatencyTable:
    key: str
    target: LatencyTarget
    layers: dict[str, int]  # layer name -> its shape's index in ``shapes``
    shapes: list[dict]  # {"spec", "in", "out", "ms", "spread"}: one grid per distinct layer shape
    fit: dict  # {"scale", "offset_ms", "points": [{"fraction", "measured_ms", "spread", "layers_ms", ...}]}
    alignment: dict  # {"width_multiple", "probes": [{"multiple", "measured_ms", "predicted_ms", "ratio"}]}
    build_seconds: float = 0.0

    @property
    def width_multiple(self) -> int:
        """The channel multiple this runtime runs at full speed (what a latency budget rounds widths to)."""
        return int(self.alignment.get("width_multiple", 1))

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
        """Milliseconds per call of the network with these layer widths (``SubmodelCost.layer_channels``), widths at
        the table's ``width_multiple``."""
        return calibrated(self.fit["points"], self.layers_ms(channels))

    def predict_line(self, channels: dict[str, tuple[int, int]]) -> float:
        """The prediction through a line fitted to the calibration networks instead of the curve (the earlier
        design, kept for the benchmark's comparison)."""
        return self.fit["scale"] * self.layers_ms(channels) + self.fit["offset_ms"]

    def predict_model(self, model: nn.Module) -> float:
        """The prediction for a network of these layers at other widths (a compact model of the same recipe), read
        from its layers' weights (no forward pass: the model may be on any device)."""
        modules = dict(model.named_modules())
        channels = {}
        for name in self.layers:
            layer = modules.get(name)
            if isinstance(layer, nn.Conv2d):
                channels[name] = (layer.weight.shape[1], layer.out_channels)
            elif isinstance(layer, nn.Linear):
                channels[name] = (layer.in_features, layer.out_features)
        return self.predict(channels)

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
                "shapes": self.shapes, "fit": self.fit, "alignment": self.alignment,
                "build_seconds": self.build_seconds}

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
                        dict(data["fit"]), dict(data["alignment"]), float(data.get("build_seconds", 0.0)))
            for shape in table.shapes:  # the parts a prediction reads
                LayerSpec.from_dict(shape["spec"])
                if np.asarray(shape["ms"], dtype=float).shape != (len(shape["in"]), len(shape["out"])):
                    raise ValueError("a grid's latencies do not match its widths")
            float(table.fit["scale"]), float(table.fit["offset_ms"]), table.width_multiple
            calibrated(table.fit["points"], 1.0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
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


def calibrated(points: list[dict], layers_ms: float) -> float:
    """A layers' sum mapped through the calibration networks: piecewise linear between them; beyond them, along the
    nearest segment (below the narrowest, never under the narrowest's latency scaled by the sum)."""
    pairs = sorted((float(p["layers_ms"]), float(p["measured_ms"])) for p in points)
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    if len(pairs) == 1 or xs[0] == xs[-1]:
        return ys[0] * layers_ms / xs[0] if xs[0] > 0 else ys[0]
    if layers_ms < xs[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0]) if xs[1] > xs[0] else 0.0
        return max(ys[0] + slope * (layers_ms - xs[0]), ys[0] * layers_ms / xs[0])
    if layers_ms > xs[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if xs[-1] > xs[-2] else 0.0
        return ys[-1] + slope * (layers_ms - xs[-1])
    return float(np.interp(layers_ms, xs, ys))


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
    table = LatencyTable(key or target.key(_identity(specs), SCHEMA), target, layers, shapes,
                         {"scale": 1.0, "offset_ms": 0.0, "points": []}, {"width_multiple": 1, "probes": []})
    explorer = _uniform_explorer(model, target)
    reference = max(ALIGNMENT_MULTIPLES)
    table.fit = calibrate(explorer, table, reference, say)
    table.alignment = measure_alignment(explorer, table, say)
    if table.width_multiple != reference:  # predictions are for widths at the runtime's own multiple
        table.fit = calibrate(explorer, table, table.width_multiple, say)
    table.build_seconds = time.perf_counter() - started
    return table


def _uniform_explorer(model: nn.Module, target: LatencyTarget):
    """An explorer over a copy of ``model`` that only sets masks and compacts (uniform-width networks)."""
    from chex_tune.core.explorer import ChannelExplorer

    example = torch.zeros(1, *target.input_shape)
    network = copy.deepcopy(model).eval().requires_grad_(True)  # the dependency graph traces through gradients
    return ChannelExplorer(network, example, total=1, sparsity=0.0, regrow_ratio=0.0, allocator="uniform",
                           verify=False)


def _measure(explorer, table: LatencyTable, masks: list[torch.Tensor]) -> tuple[float, float, float]:
    """A uniform network end to end: (measured ms, its spread, its layers' sum in the table)."""
    explorer.state.set_masks(masks)
    measured, spread = RUNTIMES[table.target.runtime].model_ms(explorer.compact(), table.target)
    return measured, spread, table.layers_ms(explorer.cost.layer_channels(masks))


def calibrate(explorer, table: LatencyTable, multiple: int, say: Callable[[str], None]) -> dict:
    """Measure whole networks at uniform widths (multiples of ``multiple``): the calibration curve, and the line
    measured = scale * (sum of layers) + offset fitted to the same points."""
    points = []
    for fraction in CALIBRATION_FRACTIONS:
        measured, spread, layers = _measure(explorer, table, uniform_masks(explorer, fraction, multiple))
        points.append({"fraction": fraction, "multiple": multiple, "measured_ms": measured, "spread": spread,
                       "layers_ms": layers})
        say(f"calibration {len(points)}/{len(CALIBRATION_FRACTIONS)}: uniform widths {fraction:.0%} (multiples of "
            f"{multiple}): {measured:.3g} ms measured, layers sum {layers:.3g} ms")
    sums, measured = [p["layers_ms"] for p in points], [p["measured_ms"] for p in points]
    scale, offset = np.polyfit(sums, measured, 1) if len(set(sums)) > 1 else (measured[0] / sums[0], 0.0)
    for point in points:
        point["predicted_ms"] = calibrated(points, point["layers_ms"])
        point["line_ms"] = float(scale * point["layers_ms"] + offset)
        point["error"] = point["line_ms"] / point["measured_ms"] - 1
    return {"scale": float(scale), "offset_ms": float(offset), "points": points}


def measure_alignment(explorer, table: LatencyTable, say: Callable[[str], None]) -> dict:
    """The smallest channel multiple whose networks run within ALIGNMENT_TOLERANCE of the widest multiple's speed
    per unit of work (measured / predicted by the calibration at the widest multiple, the slowest of its networks)."""
    probes = []
    for multiple in ALIGNMENT_MULTIPLES:
        points = []
        for fraction in ALIGNMENT_FRACTIONS:
            masks = uniform_masks(explorer, fraction, multiple, odd=multiple < max(ALIGNMENT_MULTIPLES))
            measured, spread, layers = _measure(explorer, table, masks)
            points.append({"fraction": fraction, "measured_ms": measured, "spread": spread,
                           "predicted_ms": calibrated(table.fit["points"], layers)})
        ratio = max(p["measured_ms"] / p["predicted_ms"] for p in points)
        probes.append({"multiple": multiple, "ratio": ratio, "points": points})
        say(f"alignment {len(probes)}/{len(ALIGNMENT_MULTIPLES)}: widths in multiples of {multiple}: up to "
            f"{ratio:.2f}x what aligned widths would take")
    reference = probes[-1]["ratio"]
    chosen = next(p["multiple"] for p in probes if p["ratio"] <= reference * (1 + ALIGNMENT_TOLERANCE))
    say(f"width multiple: {chosen} (the smallest within {ALIGNMENT_TOLERANCE:.0%} of multiples of "
        f"{max(ALIGNMENT_MULTIPLES)})")
    return {"width_multiple": chosen, "probes": probes}


def uniform_masks(explorer, fraction: float, multiple: int = 1, *, odd: bool = False) -> list[torch.Tensor]:
    """Every group keeping ``fraction`` of its channels, rounded to ``multiple`` channels (at least one multiple; all
    of a group narrower than that), its first units: latency does not care which. ``odd``: an odd number of
    multiples (the nearest), so that the widths are not also multiples of twice ``multiple``."""
    masks = []
    for group in explorer.state.groups:
        count = max(1, round(fraction * group.channels / multiple))
        if odd and count % 2 == 0:
            count += 1 if count * multiple < fraction * group.channels else -1
        units = max(1, min(group.channels, count * multiple) // group.tile)
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
    key = target.key(_identity(specs), SCHEMA)
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
