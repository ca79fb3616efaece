"""A user's own (non-timm) residual CNN: how it is rebuilt (builder= + builder_kwargs=), and what the explorer says
when the model or its example input does not fit, at the user's call."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import TinyResNet  # a residual CNN of the tests' own, not from timm
from torch import nn

from chex_tune import ChannelExplorer, ChexConfig, load_compact, save_compact
from chex_tune.core.builders import BuilderImportError

REFERENCE = f"{__name__}:build_net"  # how another process would import build_net


def build_net(width: int = 16, classes: int = 10) -> TinyResNet:
    """The user's builder: a module-level function, importable as ``REFERENCE``."""
    return TinyResNet(width=width, classes=classes)


class DictOutput(nn.Module):
    """A model whose forward returns a dict, as detection and multi-head models do."""

    def __init__(self):
        super().__init__()
        self.net = TinyResNet()

    def forward(self, x):
        return {"logits": self.net(x), "features": x.mean()}


class Logits(nn.Module):
    """The wrapper the explorer's error message describes."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["logits"]


def _data(n: int = 16):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _train(model, ex, optimizer, steps: int) -> None:
    x, y = _data()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        ex.step()


@pytest.mark.parametrize("builder", [build_net, REFERENCE], ids=["function", "reference"])
def test_own_model_saves_and_loads_from_its_builder(builder, tmp_path):
    torch.manual_seed(0)
    model = build_net(width=12)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ex = ChannelExplorer(model, _data()[0][:2], sparsity=0.5, regrow_ratio=0.2, period=2, total=8,
                         explore_until=0.5, optimizer=optimizer, builder=builder, builder_kwargs={"width": 12})
    _train(model, ex, optimizer, steps=8)
    assert ex.t == 8 and ex.sparsity() >= 0.4
    small = ex.compact()
    assert small.chex_recipe["builder"] == "import" and small.chex_recipe["model_name"] == REFERENCE
    assert small.chex_recipe["model_kwargs"] == {"width": 12}
    save_compact(small, tmp_path / "compact.pt")
    reloaded = load_compact(tmp_path / "compact.pt")
    x = _data()[0]
    model.eval(), small.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), small(x))
        assert torch.allclose(small(x), model(x), atol=1e-5)
    assert sum(p.numel() for p in reloaded.parameters()) == ex.params() < ex.dense_params()


def test_from_config_takes_the_same_builder_keywords(tmp_path):
    model = build_net(width=12)
    ex = ChannelExplorer.from_config(model, _data()[0][:2], ChexConfig(sparsity=0.5, regrow_ratio=0.0), total=4,
                                     builder=build_net, builder_kwargs={"width": 12})
    save_compact(ex.compact(), tmp_path / "compact.pt")
    assert load_compact(tmp_path / "compact.pt").chex_recipe["model_name"] == REFERENCE


def test_the_saved_recipe_spelling_still_works(tmp_path):
    """builder="import" + model_name + model_kwargs: what ChexReporter passes and old recipes hold."""
    model = build_net(width=12)
    ex = ChannelExplorer(model, _data()[0][:2], sparsity=0.5, regrow_ratio=0.0, total=4, builder="import",
                         model_name=REFERENCE, model_kwargs={"width": 12})
    small = ex.compact()
    save_compact(small, tmp_path / "compact.pt")
    x = _data()[0]
    with torch.no_grad():
        assert torch.equal(load_compact(tmp_path / "compact.pt")(x), small.eval()(x))


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"builder": "no_such_package.nets:build"}, BuilderImportError,
     r"cannot import model builder 'no_such_package\.nets:build': ModuleNotFoundError"),
    ({"builder": f"{__name__}:no_such_function"}, BuilderImportError, r"has no attribute 'no_such_function'"),
    ({"builder": "mynet.build_net"}, ValueError,
     r"unknown builder 'mynet\.build_net': pass a function or 'package\.module:function'"),
    ({"builder": build_net, "builder_kwargs": {"width": 16}}, ValueError,
     r"builder '.*:build_net' with builder_kwargs \{'width': 16\} builds a different model"),
    ({"builder": build_net, "builder_kwargs": {"depth": 3}}, ValueError,
     r"builder '.*:build_net' failed with builder_kwargs \{'depth': 3\}: TypeError"),
    ({"builder": lambda: TinyResNet(12)}, BuilderImportError, r"is not importable by name \(a lambda"),
    ({"builder": build_net, "model_name": "x"}, ValueError, r"pass its arguments as builder_kwargs=, not model_name="),
    ({"builder_kwargs": {"width": 12}}, ValueError, r"builder_kwargs= needs builder= as a function"),
    ({"builder": "import"}, ValueError, r"builder 'import' needs model_name="),
    ({"builder": "timm"}, ValueError, r"builder 'timm' needs model_name= .* this TinyResNet"),
])
def test_a_builder_that_cannot_rebuild_the_model_fails_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        ChannelExplorer(build_net(width=12), _data()[0][:2], total=4, **options)


def test_save_compact_without_a_builder_says_to_pass_one(tmp_path):
    ex = ChannelExplorer(build_net(), _data()[0][:2], sparsity=0.5, regrow_ratio=0.0, total=4)
    with pytest.raises(ValueError, match=r"this TinyResNet carries no recipe\. For a model not from timm, give "
                                         r"ChannelExplorer builder="):
        save_compact(ex.compact(), tmp_path / "compact.pt")


def test_a_dict_output_is_refused_and_the_advised_wrapper_works():
    x = _data()[0][:2]
    with pytest.raises(ValueError) as info:
        ChannelExplorer(DictOutput(), x, total=4)
    message = str(info.value)
    assert "DictOutput's forward returns a dict with keys ['logits', 'features'], not a tensor" in message
    assert "forward(x) returns self.net(x)['logits']" in message
    wrapped = Logits(DictOutput())
    ex = ChannelExplorer(wrapped, x, sparsity=0.5, regrow_ratio=0.0, total=4)
    assert ex.sparsity() >= 0.4 and all(g.prunable for g in ex.groups)
    small = ex.compact().eval()
    with torch.no_grad():
        assert torch.allclose(small(x), wrapped.eval()(x), atol=1e-5)


def test_a_tuple_output_is_refused():
    class Pair(TinyResNet):
        def forward(self, x):
            return super().forward(x), x

    expected = r"Pair's forward returns a tuple of 2 items, not a tensor.*self\.net\(x\)\[0\]"
    with pytest.raises(ValueError, match=expected):
        ChannelExplorer(Pair(), _data()[0][:2], total=4)


@pytest.mark.parametrize(("shape", "message"), [
    ((3, 8, 8), r"example input of shape \(3, 8, 8\): the model's first convolution stem\.0 \(Conv2d, "
                r"in_channels=3\) takes a 4-D batch \(N, 3, H, W\), got 3-D; add the batch dimension: "
                r"x\.unsqueeze\(0\) has shape \(1, 3, 8, 8\)"),
    ((2, 1, 8, 8), r"example input of shape \(2, 1, 8, 8\): the model's first convolution stem\.0 \(Conv2d, "
                   r"in_channels=3\) takes 3 channels in dimension 1 \(N, 3, H, W\), got 1"),
    ((8, 8), r"example input of shape \(8, 8\): .* takes a 4-D batch \(N, 3, H, W\), got 2-D$"),
])
def test_a_wrong_input_shape_names_the_shape_and_what_the_model_takes(shape, message):
    with pytest.raises(ValueError, match=message):
        ChannelExplorer(build_net(), torch.randn(*shape), total=4)


def test_warnings_point_at_the_callers_line():
    """Direct construction and from_config alike: the warning's location is this file, not chex_tune's."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x = _data()[0][:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.0, total=4, unit="epoch")
        ChannelExplorer.from_config(model, x, ChexConfig(sparsity=0.5, regrow_ratio=0.0), total=4)
    messages = [(str(w.message), w.filename) for w in caught]
    assert [m for m, _ in messages if "unit='epoch' without optimizer=" in m]
    assert len([m for m, _ in messages if "channel groups stay unpruned (0: 1 (GroupNorm)" in m]) == 2
    assert {filename for _, filename in messages} == {__file__}


def test_a_builder_in_a_script_is_checked_without_running_the_script_again(tmp_path):
    """A function of ``python script.py`` is recorded as ``script:build`` but checked by calling it: importing
    the script by that name, as loading does elsewhere, would run the whole script inside the constructor (or inside
    save_compact and load_compact, which rebuild the model from the recipe: in the script's own process, from it)."""
    script = tmp_path / "my_training.py"
    script.write_text(
        "import torch\nfrom torch import nn\nimport chex_tune\nfrom chex_tune import ChannelExplorer\n"
        "print('script body runs')\n"
        "def build(width=8):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(),\n"
        "                         nn.Conv2d(width, width, 3), nn.BatchNorm2d(width), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))\n"
        "ex = ChannelExplorer(build(8), torch.randn(2, 3, 8, 8), total=4, builder=build, builder_kwargs={'width': 8})\n"
        "small = ex.compact()\n"
        "print(small.chex_recipe['model_name'])\n"
        "chex_tune.save_compact(small, 'compact.pt')\n"  # checks the recipe rebuilds: with this script's build
        "print(type(chex_tune.load_compact('compact.pt')).__name__)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script body runs", "my_training:build", "Sequential"]
