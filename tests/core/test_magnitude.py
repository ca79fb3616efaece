"""The first mask's ``magnitude`` scorer ranks units as Torch-Pruning's group magnitude does."""

from __future__ import annotations

import timm
import torch
import torch_pruning as tp

from chex_tune import ChannelExplorer
from chex_tune.core.groups import classifier_modules


def test_group_magnitude_ranks_each_groups_units_like_torch_pruning():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()  # distinct magnitudes everywhere, as in a trained model
    x = torch.randn(1, 3, 32, 32)
    explorer = ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.0, total=4, verify=False,
                               initial_scorer="magnitude")
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    importance = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
    ignored = set(classifier_modules(model))
    for group in explorer.state.groups[:6]:
        layer = model.get_submodule(group.name)
        if layer in ignored:
            continue
        theirs = importance(graph.get_pruning_group(layer, tp.prune_conv_out_channels,
                                                    idxs=list(range(layer.out_channels))))
        ours = explorer.state.unit_magnitudes(group)
        assert torch.equal(torch.argsort(ours, descending=True), torch.argsort(theirs, descending=True)), group.name
        kept = explorer.state.masks[explorer.state.groups.index(group)]
        assert torch.equal(kept.nonzero().flatten(), torch.sort(torch.topk(ours, int(kept.sum())).indices).values)
