"""A compact model explored and compacted again stays one recipe: load_compact rebuilds it from the dense model."""

from __future__ import annotations

import timm
import torch

from chex_tune import ChannelExplorer, load_compact, save_compact


def explore_and_compact(model, x, macs_target):
    explorer = ChannelExplorer(model, x, macs_target=macs_target, regrow_ratio=0.05, period=1, total=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(4):
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        explorer.step()
    return explorer.compact()


def test_compacting_a_compact_model_composes_the_removed_channels_into_one_recipe(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    dense = timm.create_model("test_resnet", num_classes=5).train()
    first = explore_and_compact(dense, x, 0.5).train()
    second = explore_and_compact(first, x, 0.5).eval()  # half of the first's MACs: a quarter of the dense's
    removed_once, removed_twice = first.chex_recipe["removed"], second.chex_recipe["removed"]
    assert all(set(removed_once.get(name, ())) <= set(channels) for name, channels in removed_twice.items())
    assert sum(map(len, removed_twice.values())) > sum(map(len, removed_once.values()))
    save_compact(second, tmp_path / "twice.pt")
    rebuilt = load_compact(tmp_path / "twice.pt").eval()
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in second.parameters()]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), second(x))
