"""Masks bound to a model's tensors: zero masked channels, snapshot, restore, reset momentum.

Masking keeps the dense model's shapes and zeroes every output a masked channel has (conv and
linear rows, biases, norm scale and shift). A zero channel then contributes nothing downstream, so
the masked model computes exactly what the compacted one will. Consumers' input slices and norm
running statistics are not zeroed (their inputs are already zero) but are snapshotted and restored
with the rest, so a regrown channel comes back with the values it had when it was last active.
"""

from __future__ import annotations

import torch
from torch import nn

from chex_tune.core.groups import ChannelGroup, resolve_tensor
from chex_tune.core.scoring import top_k_indices


class MaskState:
    """One boolean unit mask per prunable group, applied to ``model`` in place."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup]):
        self.model = model
        self.groups = [g for g in groups if g.prunable]
        self.masks = [torch.ones(g.units, dtype=torch.bool) for g in self.groups]
        self.snapshot: dict[str, torch.Tensor] = {}
        self._plan: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # tensors, 0/1 multipliers

    # ----------------------------------------------------------------------------------- masking
    def set_masks(self, masks: list[torch.Tensor]) -> None:
        if len(masks) != len(self.groups):
            raise ValueError(f"expected {len(self.groups)} masks, got {len(masks)}")
        for group, mask in zip(self.groups, masks):
            if mask.shape != (group.units,) or mask.dtype != torch.bool:
                raise ValueError(f"mask for group {group.name} must be bool of shape ({group.units},), "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
            if not mask.any():
                raise ValueError(f"mask for group {group.name} would remove every channel")
        self.masks = [m.detach().cpu().clone() for m in masks]
        self._plan = None

    def _zeroing_plan(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every zeroed tensor with a broadcastable 0/1 multiplier, built once per mask change."""
        multipliers: dict[int, torch.Tensor] = {}
        tensors: dict[int, torch.Tensor] = {}
        for group, mask in zip(self.groups, self.masks):
            for piece in group.slices:
                if not piece.zero:
                    continue
                tensor = resolve_tensor(self.model, piece)
                shape = [1] * tensor.dim()
                shape[piece.dim] = tensor.shape[piece.dim]
                factor = torch.ones(shape[piece.dim])
                factor[piece.index[~mask[piece.unit]]] = 0
                factor = factor.view(shape).to(device=tensor.device, dtype=tensor.dtype)
                key = id(tensor)
                tensors[key] = tensor
                multipliers[key] = multipliers[key] * factor if key in multipliers else factor
        return list(tensors.values()), list(multipliers.values())

    @torch.no_grad()
    def apply(self) -> None:
        """Re-zero every masked output entry (call after each optimizer step).

        One fused ``_foreach_mul_`` over all masked tensors: after every optimizer step this must cost
        next to nothing, and on a GPU one call beats a kernel launch per layer.
        """
        if self._plan is None or any(t.device != m.device or t.dtype != m.dtype for t, m in zip(*self._plan)):
            self._plan = self._zeroing_plan()
        tensors, multipliers = self._plan
        if tensors:
            torch._foreach_mul_(tensors, multipliers)

    # ------------------------------------------------------------------------- snapshot, restore
    def _touched(self):
        seen = {}
        for group in self.groups:
            for piece in group.slices:
                seen.setdefault(piece.key, piece)
        return seen

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Remember every touched tensor as it is now (masked entries hold their last active values)."""
        self.snapshot = {key: resolve_tensor(self.model, piece).detach().clone()
                         for key, piece in self._touched().items()}

    @torch.no_grad()
    def restore_inactive(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Give every masked entry back its most-recently-used value; zero its optimizer state.

        Resetting momentum of restored entries is a deliberate deviation from the authors' code,
        which leaves the stale momentum a masked channel accumulated while it was zero.
        """
        if not self.snapshot:
            return
        for group, mask in zip(self.groups, self.masks):
            for piece in group.slices:
                tensor = resolve_tensor(self.model, piece)
                positions = piece.index[~mask[piece.unit]].to(tensor.device)
                if positions.numel() == 0:
                    continue
                saved = self.snapshot[piece.key].to(tensor.device)
                tensor.index_copy_(piece.dim, positions, saved.index_select(piece.dim, positions))
                if optimizer is not None and isinstance(tensor, nn.Parameter):
                    for state in optimizer.state.get(tensor, {}).values():
                        if torch.is_tensor(state) and state.shape == tensor.shape:
                            state.index_fill_(piece.dim, positions, 0)

    # ------------------------------------------------------------------------------- read values
    @torch.no_grad()
    def unit_filters(self, group: ChannelGroup) -> torch.Tensor:
        """The group's filter matrix W: column u stacks unit u's filters from every producer."""
        columns = []
        for piece in group.producers:
            tensor = resolve_tensor(self.model, piece).detach()
            order = torch.argsort(piece.unit * (piece.index.max() + 1) + piece.index)
            rows = tensor.index_select(0, piece.index[order].to(tensor.device)).flatten(1).float()
            columns.append(rows.reshape(group.units, -1))
        return torch.cat(columns, dim=1).T

    @torch.no_grad()
    def unit_magnitudes(self, group: ChannelGroup) -> torch.Tensor:
        """Each unit's squared L2 norm over the weights coupled to it: its producers' filters, its norm layers'
        scales and its consumers' input weights (Torch-Pruning's group magnitude, which leaves biases and running
        statistics out)."""
        total = torch.zeros(group.units)
        for piece in group.slices:
            tensor = resolve_tensor(self.model, piece)
            if not isinstance(tensor, nn.Parameter) or piece.attr == "bias":
                continue
            values = tensor.detach().index_select(piece.dim, piece.index.to(tensor.device)).float()
            per_position = values.pow(2).movedim(piece.dim, 0).reshape(len(piece.index), -1).sum(1).cpu()
            total.scatter_add_(0, piece.unit, per_position)
        return total

    @torch.no_grad()
    def unit_gammas(self, group: ChannelGroup, *, from_snapshot: bool = False) -> torch.Tensor | None:
        """Largest |gamma| per unit over the group's norm layers (None when it has none).

        The maximum, not the mean: a residual-stream channel matters if any layer writing to it has
        a large scale, and the mean would rank every stream last in nets that zero-initialise the
        last norm of each block (timm's ResNets do), collapsing the streams to their floor.
        """
        if not group.norms:
            return None
        best = torch.zeros(group.units)
        for piece in group.norms:
            source = self.snapshot[piece.key] if from_snapshot else resolve_tensor(self.model, piece)
            values = source.detach().index_select(0, piece.index.to(source.device)).abs().float().cpu()
            best.scatter_reduce_(0, piece.unit, values, reduce="amax")
        return best


def masks_of_widths(groups: list[ChannelGroup], widths: list[int],
                    scores: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Each group keeping its ``width`` units of highest score (its first units where it has no scores: what a
    width costs depends on the count alone)."""
    masks = []
    for n, (group, width) in enumerate(zip(groups, widths)):
        mask = torch.zeros(group.units, dtype=torch.bool)
        order = scores[n] if scores is not None and scores[n] is not None else -torch.arange(group.units).float()
        mask[top_k_indices(order, width)] = True
        masks.append(mask)
    return masks

