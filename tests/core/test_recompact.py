"""A compact model explored and compacted again stays one recipe: load_compact rebuilds it from the dense model."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from torch import nn

from chex_tune import ChannelExplorer, load_compact, save_compact
from chex_tune.core.errors import UserError


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


# ------------------------------------------------------------- a cascade by hand with the user's own CNN
USER_MODULE = "recompact_user_net"  # the user's own module: importable here and in a fresh process, not timm
USER_CODE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=32, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(x))))))
        return self.fc(x.mean((2, 3)))


def build_net(width=32, classes=10):
    return Net(width=width, classes=classes)
'''


@pytest.fixture
def user_net(tmp_path, monkeypatch):
    """The user's module on the path, as an installed package or a directory on PYTHONPATH would be."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, USER_MODULE, raising=False)
    module = __import__(USER_MODULE)
    return module, folder


def _data(n=16):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 12, 12, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def compress(model, epochs=3, **options):
    """The user's loop: a few SGD steps per epoch, ``ex.step()`` after each epoch, then compact."""
    x, y = _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ex = ChannelExplorer(model.train(), x[:2], sparsity=0.5, regrow_ratio=0.0, unit="epoch", period=1,
                         total=epochs, optimizer=optimizer, **options)
    for _ in range(epochs):
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        ex.step()
    return ex.compact().eval()


def load_in_a_fresh_process(path, folder, tmp_path) -> torch.Tensor:
    """``load_compact(path)`` in a new interpreter (only the user's folder on its path); its outputs on ``_data``."""
    x = tmp_path / "x.pt"
    torch.save(_data()[0], x)
    out = tmp_path / "fresh_outputs.pt"
    code = ("import torch, chex_tune\n"
            f"model = chex_tune.load_compact({str(path)!r})\n"
            f"x = torch.load({str(x)!r}, weights_only=True)\n"
            f"with torch.no_grad():\n    torch.save(model(x), {str(out)!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("source", ["in memory", "after load_compact"])
def test_an_own_cnn_compressed_twice_reloads_in_a_fresh_process(source, user_net, tmp_path):
    module, folder = user_net
    torch.manual_seed(0)
    first = compress(module.build_net(width=32), builder=module.build_net, builder_kwargs={"width": 32})
    save_compact(first, tmp_path / "first.pt")
    start = first if source == "in memory" else load_compact(tmp_path / "first.pt")
    second = compress(start)  # no builder: the first's recipe carries over
    assert second.chex_recipe["model_name"] == f"{USER_MODULE}:build_net"
    assert second.chex_recipe["model_kwargs"] == {"width": 32}
    assert second.conv1.out_channels < first.conv1.out_channels < 32
    once, twice = first.chex_recipe["removed"], second.chex_recipe["removed"]
    assert once and all(set(channels) <= set(twice[name]) for name, channels in once.items())
    assert sum(map(len, twice.values())) > sum(map(len, once.values()))
    save_compact(second, tmp_path / "second.pt")
    with torch.no_grad():
        expected = second(_data()[0])
    torch.testing.assert_close(load_in_a_fresh_process(tmp_path / "second.pt", folder, tmp_path), expected)


def test_the_dense_builder_may_be_given_again_and_a_wrong_one_is_refused(user_net, tmp_path):
    module, _ = user_net
    torch.manual_seed(0)
    first = compress(module.build_net(width=32), builder=module.build_net, builder_kwargs={"width": 32})
    second = compress(copy.deepcopy(first), builder=module.build_net, builder_kwargs={"width": 32})
    save_compact(second, tmp_path / "second.pt")
    assert [p.shape for p in load_compact(tmp_path / "second.pt").parameters()] == \
        [p.shape for p in second.parameters()]
    width = first.conv1.out_channels
    with pytest.raises(ValueError, match=rf"builds a different model than the one given .*this Net is a compact "
                                         rf"model whose recipe names the dense model '{USER_MODULE}:build_net' with "
                                         r"\{'width': 32\}: give that dense model's builder"):
        compress(copy.deepcopy(first), builder=module.build_net, builder_kwargs={"width": width})


def test_save_compact_refuses_a_recipe_that_does_not_rebuild_the_model(user_net, tmp_path):
    module, _ = user_net
    torch.manual_seed(0)
    first = compress(module.build_net(width=32), builder=module.build_net, builder_kwargs={"width": 32})
    second = compress(copy.deepcopy(first))
    second.chex_recipe = first.chex_recipe  # a stale recipe: what compact() used to leave on a re-compressed copy
    with pytest.raises(UserError, match=r"save_compact refused: the model's recipe \(builder 'import', "
                                        rf"'{USER_MODULE}:build_net', \{{'width': 32\}}\) does not rebuild it, so the "
                                        r"file would not load \(16 tensors differ: bn1\.bias: \(8,\) in the model, "
                                        r"\(16,\) rebuilt.*no builder at all"):
        save_compact(second, tmp_path / "second.pt")
    assert not (tmp_path / "second.pt").exists()
