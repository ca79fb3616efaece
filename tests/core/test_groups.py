"""Groups from the dependency graph, and what happens where the graph engine cannot help."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import pytest
import torch
from torch import nn

from chex_tune import ChannelExplorer
from chex_tune.core.compact import max_output_difference
from chex_tune.core.flops import count_macs
from chex_tune.core.groups import find_groups


class SplitNet(nn.Module):
    """A channel split (torch.split) feeding two branches: torch-pruning cannot map it safely."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, 4)

    def forward(self, x):
        a, b = torch.split(self.stem(x), [8, 8], dim=1)
        x = torch.cat([self.left(a), self.right(b)], dim=1)
        return self.head(self.mid(x).mean((2, 3)))


class SlicedResidualNet(nn.Module):
    """A residual add onto a channel slice of the stream."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                                    nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x[:, :8] + self.branch(x), x[:, 8:]], dim=1)
        return self.head(x.mean((2, 3)))


class NormMixNet(nn.Module):
    """GroupNorm on one stream, BatchNorm on another."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.b(self.a(x)).mean((2, 3)))


class GroupedNet(nn.Module):
    """A ResNeXt-style grouped 3x3 conv between two 1x1 convs."""

    def __init__(self):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.expand(self.grouped(self.reduce(x))).mean((2, 3)))


def _explore_and_compare(model, x, **options):
    ex = ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.2, period=1, total=4, **options)
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        ex.step()
    small = ex.compact()
    assert max_output_difference(model, small, x) <= 1e-4
    assert count_macs(small, x) == ex.macs()
    return ex


@pytest.mark.parametrize(("net", "pattern"), [(SplitNet, "tensor split"), (SlicedResidualNet, None),
                                              (NormMixNet, "GroupNorm")])
def test_unsupported_patterns_stay_dense_with_one_warning(net, pattern, image_batch):
    torch.manual_seed(0)
    model = net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = _explore_and_compare(model, image_batch)
    ours = [w for w in caught if "stay unpruned" in str(w.message)]
    assert len(ours) == 1
    skipped = [g for g in ex.groups if not g.prunable]
    assert skipped and all(g.name in str(ours[0].message) for g in skipped)
    if pattern:
        assert pattern in str(ours[0].message)
    assert ex.state.groups, "the groups away from the unsupported pattern are still pruned"
    assert ex.macs() < ex.dense_macs()


def test_grouped_conv_groups_are_tiled(image_batch):
    torch.manual_seed(0)
    ex = _explore_and_compare(GroupedNet(), image_batch)
    tiles = {g.name: g.tile for g in ex.state.groups}
    assert tiles["reduce.0"] == 4 and tiles["grouped.0"] == 4 and tiles["expand.0"] == 1
    for group, mask in zip(ex.state.groups, ex.state.masks):
        channel_mask = group.channel_mask(mask)
        assert channel_mask.numel() == group.channels
        if group.tile > 1:  # the same positions in every conv group
            assert torch.equal(channel_mask.view(group.tile, -1), mask.expand(group.tile, -1))


def hang(self, *args, **kwargs):
    """A graph build that runs away (Python work that never ends, like tracing gone in circles)."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(0.01)
    raise AssertionError("the time limit never stopped the graph build")


def test_graph_build_that_runs_away_leaves_the_model_dense(tiny_resnet, image_batch, monkeypatch):
    import torch_pruning as tp

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", hang)
    with pytest.warns(UserWarning, match="stays dense: building the channel dependency graph took over"):
        ex = ChannelExplorer(tiny_resnet, image_batch, total=4, graph_timeout_s=0.5)
    ex.step()
    assert ex.sparsity() == 0 and ex.macs() == ex.dense_macs()
    assert max_output_difference(tiny_resnet, ex.compact(), image_batch) == 0


def explore_in_a_worker_thread(model, inputs, timeout_s):
    """ChannelExplorer built in a worker thread (as in a Ray trial): its warnings, result and seconds taken."""
    import threading

    out = {}

    def work():
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out["explorer"] = ChannelExplorer(model, inputs, total=4, graph_timeout_s=timeout_s)
            except BaseException as exc:  # noqa: BLE001 (reported to the test below)
                out["error"] = exc
        out["seconds"] = time.monotonic() - start
        out["warnings"] = [str(w.message) for w in caught]

    thread = threading.Thread(target=work, daemon=True)  # daemon: a hung one cannot keep pytest alive
    thread.start()
    thread.join(90)
    assert not thread.is_alive(), "the worker thread never returned"
    assert "error" not in out, out.get("error")
    return out


def test_the_graph_build_limit_holds_in_a_worker_thread(tiny_resnet, image_batch, monkeypatch):
    import torch_pruning as tp

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", hang)
    out = explore_in_a_worker_thread(tiny_resnet, image_batch, 0.5)
    assert any("stays dense: building the channel dependency graph took over 0.5 s" in w for w in out["warnings"]), \
        out["warnings"]
    assert out["seconds"] < 0.5 + 15, out["seconds"]  # the build would hang for 60 s
    ex = out["explorer"]
    assert ex.sparsity() == 0 and ex.macs() == ex.dense_macs()


class RunawayUnderTracing(nn.Module):
    """Fast, except while torch-pruning traces it (its forward hooks are on): then forward never ends."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv(x)
        while self.traced():  # a forward gone in circles
            time.sleep(0.01)
        return self.head(y.mean((2, 3)))

    def traced(self) -> bool:
        """Whether torch-pruning's tracing hook (``_record_grad_fn``) is on this model's layers."""
        return any("_record_grad_fn" in getattr(hook, "__qualname__", "") for hook in self.conv._forward_hooks.values())


def test_a_runaway_trace_is_stopped_in_a_worker_thread_and_leaves_no_hooks(image_batch):
    model = RunawayUnderTracing()
    # torch-pruning retries a failed forward under a bare except: the limit must stop the retry too
    out = explore_in_a_worker_thread(model, image_batch, 0.5)
    assert any("stays dense" in w for w in out["warnings"]), out["warnings"]
    assert not model.traced() and all(not m._forward_hooks for m in model.modules())  # the hooks are gone
    assert model(image_batch).shape == (4, 4)


def test_the_time_limit_raises_nothing_after_its_block(monkeypatch):
    from chex_tune.core import _timeout

    monkeypatch.setattr(_timeout, "REPEAT_S", 0.001)
    for _ in range(20):  # blocks that end right at their deadline
        try:
            with _timeout.time_limit(0.005):
                end = time.monotonic() + 0.005
                while time.monotonic() < end:
                    pass
        except _timeout.TimeLimitExceeded:
            pass
        time.sleep(0.02)  # an exception left pending would land here, outside the block


def test_a_model_with_nothing_to_prune_says_so(image_batch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    with pytest.warns(UserWarning, match="stays dense: the dependency graph found no channel group"):
        ex = ChannelExplorer(model, image_batch, total=4)
    assert ex.step() is False and ex.sparsity() == 0 and ex.macs() == ex.dense_macs()


def test_classifier_and_ignored_layers_keep_their_outputs(tiny_resnet, image_batch):
    report = find_groups(tiny_resnet, image_batch, ignore=["blocks.1.0"])
    names = {g.name for g in report.groups}
    assert "head" not in names and "blocks.1.0" not in names
    assert {"blocks.0.0"} <= names


def test_mac_count_matches_the_formula():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 4, 1, stride=2), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    x = torch.randn(3, 3, 16, 16)
    expected = 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 9 + 8 * 8 * 4 * 8 + 4 * 8 * 8 * 5
    assert count_macs(model, x) == expected


def test_core_does_not_import_the_tuning_stack():
    code = ("import chex_tune.core.explorer, chex_tune, sys; "
            "bad = {'ray', 'optuna', 'mlflow'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
