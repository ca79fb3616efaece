"""ChannelExplorer end to end: masking, restore, resumability, compaction equivalence, bad input."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from chex_tune import ChannelExplorer, load_compact, save_compact
from chex_tune.core.compact import max_output_difference
from chex_tune.core.flops import count_macs, count_params
from chex_tune.core.groups import resolve_tensor


def _random_update(model, generator_seed: int, scale: float = 0.05):
    """Stand-in for an optimizer step: moves every parameter, masked ones included."""
    generator = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def _masked_entries(ex):
    """(tensor, dim, positions) of every zeroed entry under the current masks."""
    for group, mask in zip(ex.state.groups, ex.state.masks):
        for piece in group.slices:
            if piece.zero:
                yield resolve_tensor(ex.model, piece), piece.dim, piece.index[~mask[piece.unit]]


EQUIVALENCE_MODELS = [
    ("resnet18", 32), ("resnet50", 32), ("mobilenetv2_100", 32), ("efficientnet_b0", 32),
    ("regnetx_002", 32), ("seresnet18", 32), ("convnext_atto", 32), ("densenet121", 32),
]


@pytest.mark.parametrize(("name", "size"), EQUIVALENCE_MODELS)
def test_compact_equals_masked_after_exploration(name, size, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    x = torch.randn(2, 3, size, size)
    ex = ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.2, period=1, total=6)
    for step in range(6):
        _random_update(model, step)
        model.train()
        model(torch.randn(2, 3, size, size))  # moves BN running statistics too
        ex.step()
    assert ex.t == 6 and 0.45 <= ex.sparsity() <= 0.55
    small = ex.compact()
    assert count_params(small) < count_params(model)
    assert max_output_difference(model, small, x) <= 1e-4
    assert count_macs(small, x) == ex.macs()
    assert count_params(small) == ex.params()
    save_compact(small, tmp_path / "small.pt")
    reloaded = load_compact(tmp_path / "small.pt")
    with torch.no_grad():
        assert torch.equal(reloaded(x), small.eval()(x))


def test_masked_channels_stay_zero_through_training(tiny_resnet, image_batch):
    model = tiny_resnet
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    ex = ChannelExplorer(model, image_batch, sparsity=0.5, regrow_ratio=0.25, period=2, total=10,
                         optimizer=optimizer)
    targets = torch.randint(0, 10, (4,))
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(image_batch), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the explorer's hook re-zeroes here
        for tensor, dim, positions in _masked_entries(ex):
            assert positions.numel() == 0 or tensor.index_select(dim, positions).abs().max() == 0
        ex.step()
        for tensor, dim, positions in _masked_entries(ex):
            assert positions.numel() == 0 or tensor.index_select(dim, positions).abs().max() == 0
    assert ex.schedule.is_frozen(ex.t)


def test_regrown_channel_returns_with_its_last_active_values(tiny_resnet, image_batch):
    model = tiny_resnet
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ex = ChannelExplorer(model, image_batch, sparsity=0.5, regrow_ratio=0.5, period=1, total=40,
                         explore_until=1.0, optimizer=optimizer)
    targets = torch.randint(0, 10, (4,))
    history = {}  # (group, unit) -> the unit's conv rows when it was last active
    for _ in range(12):
        before = [m.clone() for m in ex.state.masks]
        loss = torch.nn.functional.cross_entropy(model(image_batch), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        snapshot_rows = {}
        for g, (group, mask) in enumerate(zip(ex.state.groups, before)):
            weight = resolve_tensor(model, group.producers[0])
            for unit in mask.nonzero().flatten().tolist():
                snapshot_rows[(g, unit)] = weight[unit].clone()
        history.update(snapshot_rows)
        ex.step()
        for g, (group, old, new) in enumerate(zip(ex.state.groups, before, ex.state.masks)):
            regrown = (new & ~old).nonzero().flatten().tolist()
            weight = resolve_tensor(model, group.producers[0])
            for unit in regrown:
                if (g, unit) in history:
                    assert torch.equal(weight[unit], history[(g, unit)])
                    state = optimizer.state[weight]["momentum_buffer"]
                    assert state[unit].abs().max() == 0  # restored entries start without momentum
                    return
    pytest.fail("no channel was regrown after having been active: the test did not exercise restore")


def test_state_dict_resumes_identically(tiny_resnet, image_batch):
    def run(model, ex, steps, seed):
        for step in range(steps):
            _random_update(model, seed + step)
            ex.step()

    model_a = tiny_resnet
    model_b = copy.deepcopy(model_a)
    ex_a = ChannelExplorer(model_a, image_batch, sparsity=0.5, regrow_ratio=0.3, period=1, total=8, seed=3)
    run(model_a, ex_a, 3, seed=100)
    saved_state, saved_weights = ex_a.state_dict(), copy.deepcopy(model_a.state_dict())
    run(model_a, ex_a, 5, seed=200)

    ex_b = ChannelExplorer(model_b, image_batch, sparsity=0.5, regrow_ratio=0.3, period=1, total=8, seed=3)
    model_b.load_state_dict(saved_weights)
    ex_b.load_state_dict(saved_state)
    run(model_b, ex_b, 5, seed=200)
    assert ex_b.t == ex_a.t == 8
    assert all(torch.equal(a, b) for a, b in zip(ex_a.state.masks, ex_b.state.masks))
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key


def test_final_sparsity_and_frozen_masks(tiny_resnet, image_batch):
    ex = ChannelExplorer(tiny_resnet, image_batch, sparsity=0.5, regrow_ratio=0.25, period=1, total=10)
    total = sum(g.channels for g in ex.state.groups)
    assert abs(ex.sparsity() - 0.25) * total <= len(ex.state.groups)  # step 0 keeps 1 - (S - delta0)
    for _ in range(ex.schedule.stop):
        _random_update(tiny_resnet, ex.t)
        ex.step()
    assert abs(ex.sparsity() - 0.5) * total <= len(ex.state.groups)
    frozen = [m.clone() for m in ex.state.masks]
    for _ in range(3):
        _random_update(tiny_resnet, 50 + ex.t)
        assert ex.step() is False
    assert all(torch.equal(a, b) for a, b in zip(frozen, ex.state.masks))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsity": 1.0}, "sparsity must be in [0.0, 1.0)"),
    ({"sparsity": -0.1}, "sparsity must be in [0.0, 1.0)"),
    ({"sparsity": 0.3, "regrow_ratio": 0.4}, "regrow_ratio must be <= sparsity"),
    ({"period": 0}, "period must be a positive integer"),
    ({"scorer": "magic"}, "unknown scorer 'magic'; choose one of: css, l1"),
    ({"sampler": "magic"}, "unknown sampler 'magic'; choose one of: projection, uniform"),
    ({"allocator": "magic"}, "unknown allocator 'magic'; choose one of: gamma, gamma-per-cost, gamma-normalized, "
                                "uniform"),
    ({"macs_target": 1.5}, "macs_target must be in (0.0, 1.0]"),
    ({"sparsty": 0.5}, "unknown CHEX setting(s) ['sparsty']"),
    ({"ignore": ["no.such.layer"]}, "ignore names unknown layers ['no.such.layer']"),
])
def test_bad_input_names_the_argument(tiny_resnet, image_batch, kwargs, message):
    options = {"sparsity": 0.5, "regrow_ratio": 0.2, "period": 1, "total": 10} | kwargs
    with pytest.raises(ValueError) as info:
        ChannelExplorer(tiny_resnet, image_batch, **options)
    assert message in str(info.value)


def test_model_that_cannot_run_names_the_failing_layer(image_batch):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"fails in 2 \(Linear\)"):
        ChannelExplorer(model, image_batch, total=10)
