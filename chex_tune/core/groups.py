"""Channel groups: the unit every other part of the engine passes around.

A group is a set of channels that must be kept or removed together across layers (a conv's output
channels, its norm layer, the next layers' input channels, every layer tied to them by a residual add,
a depthwise conv, a squeeze-excite gate, a concat slice). We take the coupling from torch-pruning's
``DependencyGraph`` and translate each of its groups into plain data: for every tensor the group
touches, which positions along which dimension belong to which of the group's units. Everything
after this module (masking, scoring, MACs, compaction) works on that data and never re-traces.

A *unit* is what one mask entry switches. Usually a unit is one channel. When a group feeds a grouped
convolution (ResNeXt, RegNet), torch-pruning can only remove the same local positions from every conv
group, so a unit is then "position j in each of the G conv groups" and widths move in steps of G.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from chex_tune.core._timeout import TimeLimitExceeded, time_limit

# Normalisations that mix channels: statistics over zeroed channels differ from statistics over
# removed ones, so groups containing them stay unpruned (see chex-method.md).
_CHANNEL_MIXING_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)
# torch-pruning index mappings we do not trust for masking: the masked and compacted models can
# disagree through them (see the coverage benchmark).
_UNSUPPORTED_OPS = {tp.ops.OPTYPE.SPLIT: "tensor split", tp.ops.OPTYPE.SLICE: "channel slice",
                    tp.ops.OPTYPE.UNBIND: "unbind", tp.ops.OPTYPE.EXPAND: "expand"}


@dataclass
class TensorSlice:
    """Positions ``index`` along ``dim`` of tensor ``owner.attr`` that belong to units ``unit``.

    ``zero``: masked positions are set to zero (outputs: producer weights/biases, norm affine
    parameters). Slices with ``zero=False`` (consumer inputs, running statistics) are only
    snapshotted and restored: their inputs are already zero, so they cannot change the output.
    """

    owner: str
    attr: str
    dim: int
    index: torch.Tensor
    unit: torch.Tensor
    zero: bool

    @property
    def key(self) -> str:
        return f"{self.owner}.{self.attr}" if self.owner else self.attr


@dataclass
class ChannelGroup:
    """One set of coupled channels, as plain data.

    ``name`` is the qualified name of the layer whose output channels define the group (the root);
    compaction re-finds the group from it. ``channels = units * tile``.
    """

    name: str
    channels: int
    tile: int
    slices: list[TensorSlice] = field(default_factory=list)
    producers: list[TensorSlice] = field(default_factory=list)  # conv/linear outputs: rows of W
    norms: list[TensorSlice] = field(default_factory=list)  # norm scales (gamma)
    skip_reason: str | None = None  # set: the group stays unpruned, and this says why

    @property
    def units(self) -> int:
        return self.channels // self.tile

    @property
    def prunable(self) -> bool:
        return self.skip_reason is None

    def channel_mask(self, unit_mask: torch.Tensor) -> torch.Tensor:
        """Unit mask -> channel mask over the root layer's channels (tiled over conv groups)."""
        return unit_mask.repeat(self.tile)


@dataclass
class GroupReport:
    groups: list[ChannelGroup]
    skipped: dict[str, str]  # layer or group name -> why it stays dense


def classifier_modules(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs are the model's outputs: never pruned."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            return [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))] or [head]
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return linears[-1:]


def build_dependency_graph(model: nn.Module, example_inputs):
    """Trace ``model`` into a torch-pruning graph; raise ``GraphBuildError`` naming what failed."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
    except (TimeLimitExceeded, RecursionError):
        raise
    except Exception as exc:  # torch-pruning raises many kinds; name the failing module if we can
        raise GraphBuildError(f"tracing the model for channel dependencies failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)


def _restore(model: nn.Module, hooks: dict, was_training: bool) -> None:
    """Remove forward hooks added since ``hooks`` was taken; put back the train/eval mode."""
    for module, before in hooks.items():
        for key in [key for key in module._forward_hooks if key not in before]:
            del module._forward_hooks[key]
    model.train(was_training)


class GraphBuildError(RuntimeError):
    pass


def find_groups(model: nn.Module, example_inputs, *, ignore: Sequence[str] = (),
                timeout_s: float | None = 120.0) -> GroupReport:
    """All channel groups of ``model``; groups we cannot mask exactly carry a ``skip_reason``.

    ``ignore``: qualified layer names whose output channels must stay (the classifier always does).
    """
    names = dict(model.named_modules())
    unknown = [n for n in ignore if n not in names]
    if unknown:
        raise ValueError(f"ignore names unknown layers {unknown}; layer names look like "
                         f"{list(names)[1:4]}")
    ignored = classifier_modules(model) + [names[n] for n in ignore]
    module_names = {m: n for n, m in model.named_modules()}
    param_names = {p: n for n, p in model.named_parameters()}
    groups = []
    # torch-pruning removes its tracing hooks only when tracing ends: a stopped trace leaves them behind
    hooks, was_training = {module: dict(module._forward_hooks) for module in model.modules()}, model.training
    try:  # torch-pruning's tracing and group enumeration can both run away on unusual graphs
        with time_limit(timeout_s):
            graph = build_dependency_graph(model, example_inputs)
            for tp_group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
                root = tp_group[0].dep.target.module
                groups.append(_translate(tp_group, graph, module_names[root], module_names, param_names))
    except TimeLimitExceeded as exc:
        _restore(model, hooks, was_training)  # outside the limit's block: nothing interrupts the clean-up
        raise GraphBuildError(f"building the channel dependency graph took over {timeout_s:g} s") from exc
    except RecursionError as exc:
        _restore(model, hooks, was_training)
        raise GraphBuildError("building the channel dependency graph exceeded Python's recursion limit") from exc
    skipped = {g.name: g.skip_reason for g in groups if not g.prunable}
    return GroupReport(groups=groups, skipped=skipped)


def _translate(tp_group, graph, root_name: str, module_names, param_names) -> ChannelGroup:
    channels = len(tp_group[0].idxs)
    tile = 1
    for item in tp_group.items:
        layer = item.dep.target.module
        if isinstance(layer, nn.Conv2d) and 1 < layer.groups < layer.out_channels:
            tile = math.lcm(tile, layer.groups)
    group = ChannelGroup(name=root_name, channels=channels, tile=tile)
    if channels % tile:
        group.skip_reason = f"{channels} channels do not split into {tile} conv groups"
        return group
    for item in tp_group.items:
        reason = _add_item(group, item, graph, module_names, param_names)
        if reason:
            group.skip_reason = reason
            group.slices.clear()
            return group
    _merge_duplicate_slices(group)
    if not group.producers:
        group.skip_reason = "no conv or linear layer produces these channels"
    return group


def _add_item(group: ChannelGroup, item, graph, module_names, param_names) -> str | None:
    """Record the tensors one torch-pruning group item touches; return a reason if unsupported."""
    target, handler = item.dep.target, item.dep.handler
    op_type = target.type
    if op_type in _UNSUPPORTED_OPS:
        return f"{_UNSUPPORTED_OPS[op_type]} at {target.name}"
    layer = target.module
    is_out = graph.is_out_channel_pruning_fn(handler)
    index = torch.as_tensor(item.idxs, dtype=torch.long)
    units = torch.as_tensor(item.root_idxs, dtype=torch.long) % group.units

    def add(owner, attr, dim, zero, role=None, idx=index):
        piece = TensorSlice(owner, attr, dim, idx, units, zero)
        group.slices.append(piece)
        if role is not None:
            role.append(piece)

    if op_type == tp.ops.OPTYPE.PARAMETER:
        pruning_dim = next(u.pruning_dim for u in graph.unwrapped_parameters if u.parameters is layer)
        add("", param_names[layer], pruning_dim, zero=True)
        return None
    if not isinstance(layer, nn.Module) or layer not in module_names:
        return None  # torch-pruning's own ops (add, concat, reshape): nothing to store
    name = module_names[layer]
    if isinstance(layer, nn.Conv2d):
        if layer.transposed:
            return f"transposed conv {name}"
        depthwise = layer.groups == layer.out_channels == layer.in_channels and layer.groups > 1
        if is_out or depthwise:
            add(name, "weight", 0, zero=True, role=group.producers)
            if layer.bias is not None:
                add(name, "bias", 0, zero=True)
        else:  # input channels; grouped convs index their weight by position inside a conv group
            add(name, "weight", 1, zero=False, idx=index % (layer.in_channels // layer.groups))
    elif isinstance(layer, nn.Linear):
        if is_out:
            add(name, "weight", 0, zero=True, role=group.producers)
            if layer.bias is not None:
                add(name, "bias", 0, zero=True)
        else:
            add(name, "weight", 1, zero=False)
    elif isinstance(layer, _BATCH_NORMS):
        if not layer.affine:
            return f"{name} ({type(layer).__name__}) has no affine scale to mask"
        add(name, "weight", 0, zero=True, role=group.norms)
        add(name, "bias", 0, zero=True)
        if layer.track_running_stats:
            add(name, "running_mean", 0, zero=False)
            add(name, "running_var", 0, zero=False)
    elif isinstance(layer, _CHANNEL_MIXING_NORMS):
        return f"{name} ({type(layer).__name__}) normalises across channels"
    elif isinstance(layer, nn.PReLU):
        if layer.num_parameters > 1:
            add(name, "weight", 0, zero=False)
    elif any(True for _ in layer.parameters(recurse=False)):
        return f"{name} ({type(layer).__name__}) is a layer type the engine cannot mask"
    return None


def _merge_duplicate_slices(group: ChannelGroup) -> None:
    """One slice per (tensor, dim): torch-pruning may list a layer once per path that reaches it."""
    merged: dict[tuple[str, int], TensorSlice] = {}
    for piece in group.slices:
        key = (piece.key, piece.dim)
        if key in merged:
            prev = merged[key]
            both_index = torch.cat([prev.index, piece.index])
            both_unit = torch.cat([prev.unit, piece.unit])
            pairs = torch.unique(torch.stack([both_index, both_unit]), dim=1)
            prev.index, prev.unit = pairs[0], pairs[1]
        else:
            merged[key] = piece
    keep = {id(p) for p in merged.values()}
    group.slices = [p for p in group.slices if id(p) in keep]
    group.producers = [p for p in group.producers if id(p) in keep]
    group.norms = [p for p in group.norms if id(p) in keep]
    for piece in group.slices:  # positions once each, in order (grouped-conv inputs repeat them)
        pairs = torch.unique(torch.stack([piece.index, piece.unit]), dim=1)
        piece.index, piece.unit = pairs[0], pairs[1]


def resolve_tensor(model: nn.Module, piece: TensorSlice) -> torch.Tensor:
    owner = model.get_submodule(piece.owner) if piece.owner else model
    if not piece.owner:  # an unwrapped parameter: attr is its full dotted name
        *path, attr = piece.attr.split(".")
        owner = model.get_submodule(".".join(path)) if path else model
        return getattr(owner, attr)
    return getattr(owner, piece.attr)
