"""timm models by name and the small-input stem."""

from __future__ import annotations

import pytest
import torch

from chex_tune import ChannelExplorer, load_compact, save_compact
from chex_tune.core.flops import count_macs
from chex_tune.train.models import SMALL_STEM_BUILDER, create_model, model_recipe, resolve_stem


def test_small_stem_keeps_full_resolution_into_the_first_stage():
    timm_stem = create_model("resnet18", num_classes=10, in_chans=1, stem="timm")
    small = create_model("resnet18", num_classes=10, in_chans=1, stem="small")
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    seen = {}
    small.layer1.register_forward_hook(lambda m, i, o: seen.update(small=o.shape))
    timm_stem.layer1.register_forward_hook(lambda m, i, o: seen.update(timm=o.shape))
    x = torch.randn(2, 1, 28, 28)
    assert small(x).shape == timm_stem(x).shape == (2, 10)
    assert seen["small"][-2:] == (28, 28) and seen["timm"][-2:] == (7, 7)
    # 3x3 instead of 7x7 on the stem, 16x more positions everywhere after it
    assert count_macs(small, x[:1]) > 10 * count_macs(timm_stem, x[:1])


def test_stem_auto_picks_small_for_small_images():
    assert resolve_stem("auto", 28) == "small" and resolve_stem("auto", 224) == "timm"
    assert resolve_stem("timm", 28) == "timm"
    with pytest.raises(ValueError, match="unknown stem 'tiny'"):
        resolve_stem("tiny", 28)


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet81'.*closest names: .*resnet18"):
        create_model("resnet81", num_classes=10, in_chans=1)


def test_compact_small_stem_model_reloads_through_its_builder(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, in_chans=1, stem="small")
    x = torch.randn(2, 1, 28, 28)
    recipe = model_recipe("resnet18", num_classes=10, in_chans=1, stem="small")
    assert recipe["builder"] == SMALL_STEM_BUILDER
    ex = ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.0, total=10, verify=False, **recipe)
    small = ex.compact().eval()
    save_compact(small, tmp_path / "m.pt")
    loaded = load_compact(tmp_path / "m.pt")
    assert loaded.conv1.stride == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x))
