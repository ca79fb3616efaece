"""What input an exported model expects: pixel scale, per-channel mean and std, input size, channel order and class
names, written into an ONNX file's ``metadata_props`` and printed by ``chex-tune export``.

The built-in loop feeds a model ``(x / 255 - mean) / std`` per channel (``train/data``). By default an exported file
expects that normalised input, and its metadata says how to make it. With ``fold=True`` (``--with-normalization``)
the normalisation is part of the graph (``Normalized`` wraps the model before export), so the file takes pixels
scaled to [0, 1] as they are. A run of a user's own trainable names no dataset: its file carries the input size
only, and folding is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch
from torch import nn

from chex_tune.config import RunConfig

log = logging.getLogger(__name__)

# Class names, in label order, of the datasets whose labels are fixed.
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
PIXELS = "float32 NCHW, pixels scaled to [0, 1] (x / 255)"


class Normalized(nn.Module):
    """``model((x - mean) / std)``: the model as a file that takes pixels in [0, 1] sees it."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class Denormalized(nn.Module):
    """A file with the normalisation in its graph, fed normalised batches (what the loop's ``evaluate`` gives):
    ``exported(x * std + mean)``, so it is scored on the pixels it was made for."""

    def __init__(self, exported: nn.Module, mean, std):
        super().__init__()
        self.exported = exported
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exported(x * self.std.to(x.device) + self.mean.to(x.device))


@dataclass(frozen=True)
class Preprocessing:
    input_shape: tuple[int, ...]  # (1, C, H, W): the model's input, batch dimension dynamic
    dataset: str | None = None  # None: a user's own trainable
    mean: tuple[float, ...] | None = None  # per input channel, of pixels in [0, 1]
    std: tuple[float, ...] | None = None
    channel_order: str = ""
    class_names: tuple[str, ...] | None = None
    folded: bool = False  # the normalisation is in the graph: the file takes pixels in [0, 1]

    @property
    def normalization(self) -> str:
        if self.mean is None:
            return "unknown (a run of your own trainable): feed what your loop fed the model"
        if self.folded:
            return "in the graph: feed pixels in [0, 1]"
        return "not in the graph: feed (x - mean) / std per channel, x in [0, 1]"

    def metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props``: text values, lists as JSON."""
        channels, height, width = self.input_shape[1:]
        props = {"input": PIXELS, "input_shape": json.dumps(["batch", channels, height, width]),
                 "input_size": f"{height}x{width}", "normalization": self.normalization}
        if self.channel_order:
            props["channel_order"] = self.channel_order
        if self.dataset is not None:
            props["dataset"] = self.dataset
        if self.mean is not None:
            props["mean"], props["std"] = json.dumps([round(v, 6) for v in self.mean]), \
                json.dumps([round(v, 6) for v in self.std])
        if self.class_names:
            props["class_names"] = json.dumps(list(self.class_names))
        return props

    def describe(self) -> list[str]:
        """What ``chex-tune export`` prints about the written file's input."""
        channels, height, width = self.input_shape[1:]
        lines = [f"input: batch x {channels} x {height} x {width}, {PIXELS}"
                 f"{f'; channels: {self.channel_order}' if self.channel_order else ''}"]
        if self.mean is not None:
            lines.append(f"normalisation: mean {list(self.mean)}, std {list(self.std)}; {self.normalization}")
        else:
            lines.append(f"normalisation: {self.normalization}")
        if self.class_names:
            lines.append(f"classes: {', '.join(self.class_names)}")
        return lines


def preprocessing_of(config: RunConfig | None, input_shape, *, fold: bool = False) -> Preprocessing:
    """The input a run's compact model expects (``config``: its run configuration; None for a user's trainable)."""
    shape = tuple(int(d) for d in input_shape)
    if config is None:
        if fold:
            raise ValueError("--with-normalization needs the run's normalisation, and this run was trained by your own "
                             "trainable (no dataset recorded); export without it and normalise as your loop did")
        return Preprocessing(shape)
    dataset, channels = config.train.dataset, shape[1]
    try:
        mean, std, own = _dataset_stats(config, channels)
    except ValueError as exc:  # a dataset that measures its own statistics, not on this machine
        if fold:
            raise ValueError(f"--with-normalization needs {dataset}'s normalisation: {exc}") from exc
        log.warning("the export's metadata carries no mean and std: %s", exc)
        return Preprocessing(shape, dataset, class_names=CLASS_NAMES.get(dataset))
    if own == channels:
        order = "grey" if channels == 1 else "RGB"
    elif own == 1:
        order = f"grey, repeated on {channels} channels"
    else:  # colour images averaged into one channel after normalising: not one mean and std per input channel
        if fold:
            raise ValueError(f"--with-normalization: the run fed {dataset}'s {own} channels averaged into 1 after "
                             f"normalising each; that is not one (x - mean) / std per channel; export without it")
        return Preprocessing(shape, dataset, mean, std, "RGB averaged to 1 channel after normalising",
                             CLASS_NAMES.get(dataset))
    if len(mean) != channels:
        mean, std = mean * channels, std * channels
    return Preprocessing(shape, dataset, mean, std, order, CLASS_NAMES.get(dataset), fold)


def _dataset_stats(config: RunConfig, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Per-channel mean and std of the dataset's own channels, and how many it has: the fixed statistics of a named
    dataset, else (a dataset that measures its own, as synthetic does) read from its loaded normalisation."""
    from chex_tune.train.data import STATS, load_data

    if config.train.dataset in STATS:
        mean, std = STATS[config.train.dataset]
        return tuple(mean), tuple(std), len(mean)
    data = load_data(config.train, "cpu")
    # normalise is per channel affine in the pixel value: its values at 0 and 255 give mean and std
    size = (1, data.own_chans, 1, 1)
    low = data.normalise(torch.zeros(size, dtype=torch.uint8)).flatten()
    high = data.normalise(torch.full(size, 255, dtype=torch.uint8)).flatten()
    std = 1 / (high - low)
    mean = -low * std
    log.debug("measured normalisation of %s: mean %s std %s", config.train.dataset, mean.tolist(), std.tolist())
    if data.own_chans != data.in_chans and data.own_chans == 1:  # repeated: every channel the same
        mean, std = mean[:1], std[:1]
    return tuple(mean.tolist()), tuple(std.tolist()), data.own_chans
