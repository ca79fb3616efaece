"""MACs and parameter counts, by the paper's convention.

MACs: multiply-accumulates of conv and linear layers for one input at the model's input size (norms,
activations and pooling excluded). Params: parameters of the (compacted) model.

A conv or linear layer performs ``output positions x weight elements`` MACs (a grouped conv's weight
already holds only ``in_channels / groups`` inputs per output). A masked sub-model is costed without
building it: each weight keeps the product, over its dimensions, of the positions still alive there.
The compacted model's hook-based count must equal that analytic count (a test checks it).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from chex_tune.core.groups import ChannelGroup

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _as_tuple(example_inputs):
    return example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


@torch.no_grad()
def output_positions(model: nn.Module, example_inputs) -> dict[str, int]:
    """For each conv/linear layer: output positions per sample (H*W for a conv, tokens for linear)."""
    positions: dict[str, int] = defaultdict(int)
    handles = []
    for name, layer in model.named_modules():
        if isinstance(layer, _COUNTED):
            def hook(mod, inputs, output, name=name):
                channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
                positions[name] += output.numel() // (output.shape[0] * channels)
            handles.append(layer.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(*_as_tuple(example_inputs))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return dict(positions)


def count_macs(model: nn.Module, example_inputs) -> int:
    """MACs of one sample (``example_inputs`` may hold a batch; the count is per sample)."""
    modules = dict(model.named_modules())
    return sum(pos * modules[name].weight.numel() for name, pos in output_positions(model, example_inputs).items())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SubmodelCost:
    """MACs and params of the sub-model a set of unit masks selects, without building it."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup], example_inputs):
        self.groups = [g for g in groups if g.prunable]
        self.positions = output_positions(model, example_inputs)
        self.shapes: dict[str, tuple[int, ...]] = {n: tuple(p.shape) for n, p in model.named_parameters()}
        # (tensor key, dim) -> [(group number, index, unit)]; only parameters count
        self.slices: dict[tuple[str, int], list] = defaultdict(list)
        for number, group in enumerate(self.groups):
            for piece in group.slices:
                if piece.key in self.shapes:
                    self.slices[(piece.key, piece.dim)].append((number, piece.index, piece.unit))
        self.weight_keys = {name: f"{name}.weight" for name in self.positions}
        self.dense_macs = self.macs(None)
        self.dense_params = self.params(None)
        self._unit_macs: list[int] | None = None

    def _alive(self, key: str, dim: int, masks) -> int:
        """Positions of dimension ``dim`` of parameter ``key`` still alive under ``masks``."""
        size = self.shapes[key][dim]
        pieces = self.slices.get((key, dim))
        if masks is None or not pieces:
            return size
        alive = torch.ones(size, dtype=torch.bool)
        for number, index, unit in pieces:
            alive[index] &= masks[number][unit]
        return int(alive.sum())

    def _alive_elements(self, key: str, masks) -> int:
        total = 1
        for dim in range(len(self.shapes[key])):
            total *= self._alive(key, dim, masks)
        return total

    def layer_channels(self, masks: list[torch.Tensor] | None) -> dict[str, tuple[int, int]]:
        """Per conv/linear layer: (input channels per weight group, output channels) in the sub-model ``masks``
        selects: what a latency table is looked up by."""
        return {name: (self._alive(key, 1, masks), self._alive(key, 0, masks))
                for name, key in self.weight_keys.items()}

    def macs(self, masks: list[torch.Tensor] | None) -> int:
        return sum(pos * self._alive_elements(self.weight_keys[name], masks) for name, pos in self.positions.items())

    def unit_macs(self) -> list[int]:
        """Per group: the MACs one of its units costs in the dense model (dense MACs minus those without it)."""
        if self._unit_macs is None:  # a property of the dense model: computed once
            self._unit_macs = []
            for number in range(len(self.groups)):
                masks = [torch.ones(g.units, dtype=torch.bool) for g in self.groups]
                masks[number][0] = False
                self._unit_macs.append(self.dense_macs - self.macs(masks))
        return list(self._unit_macs)

    def params(self, masks: list[torch.Tensor] | None) -> int:
        return sum(self._alive_elements(key, masks) for key in self.shapes)
