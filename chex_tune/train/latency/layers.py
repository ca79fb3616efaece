"""The layers a latency table measures: every conv and linear layer of a network, as the shapes that decide its
speed (kernel, stride, padding, groups, the input's size) and its dense channel counts.

Pruning changes only a layer's input and output channels, so a layer's latency is a function of those two on a
grid; norms fold into the conv and activations fuse with it in the runtimes measured, and what they and the
residual additions cost is left to the table's end-to-end calibration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# Widths measured per layer, as fractions of its dense channels; bilinear interpolation between them is exact
# for a cost linear in each of input and output channels, which a dense kernel's is between vector-width steps.
GRID_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0)


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # "conv" or "linear"
    in_channels: int  # per weight group (a conv's weight.shape[1])
    out_channels: int
    kernel: tuple[int, ...] = (1, 1)
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1
    input_size: tuple[int, ...] = (1, 1)  # the input's (H, W)

    @property
    def depthwise(self) -> bool:
        """One input channel per output: its width is the output's, and pruning removes whole groups."""
        return self.kind == "conv" and self.groups > 1 and self.in_channels == 1 and self.groups == self.out_channels

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> LayerSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def in_grid(self) -> list[int]:
        return [1] if self.depthwise else grid(self.in_channels)

    def out_grid(self) -> list[int]:
        return grid(self.out_channels)


def grid(channels: int) -> list[int]:
    return sorted({max(1, round(channels * fraction)) for fraction in GRID_FRACTIONS})


@torch.no_grad()
def layer_specs(model: nn.Module, example: torch.Tensor) -> dict[str, LayerSpec]:
    """Every conv and linear layer of ``model`` by qualified name, with the input size it sees for ``example``."""
    sizes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            def hook(module, inputs, output, name=name):
                sizes.setdefault(name, tuple(inputs[0].shape[2:]) if inputs[0].dim() == 4 else (1, 1))
            handles.append(layer.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    specs = {}
    for name, layer in model.named_modules():
        if name not in sizes:
            continue
        if isinstance(layer, nn.Linear):
            specs[name] = LayerSpec("linear", layer.in_features, layer.out_features)
        else:
            specs[name] = LayerSpec("conv", layer.weight.shape[1], layer.out_channels, tuple(layer.kernel_size),
                                    tuple(layer.stride), _padding(layer), tuple(layer.dilation), layer.groups,
                                    sizes[name])
    return specs


def _padding(layer: nn.Conv2d) -> tuple[int, ...]:
    if isinstance(layer.padding, str):  # "same" / "valid": what it pads, for a stride-1 conv
        if layer.padding == "valid":
            return (0, 0)
        return tuple(d * (k - 1) // 2 for k, d in zip(layer.kernel_size, layer.dilation))
    return tuple(layer.padding)
