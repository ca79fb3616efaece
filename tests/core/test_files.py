"""Files the engine writes and reads: written whole with the mode open() gives, a missing one named plainly."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from chex_tune import ChannelExplorer, load_compact, save_compact
from chex_tune.core._atomic import atomic_torch_save, atomic_write, atomic_write_text


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_mode_open_gives(umask, tmp_path):
    with open(tmp_path / "plain.txt", "w") as handle:  # what the user's umask allows any new file
        handle.write("x")
    atomic_write_text("{}", tmp_path / "metrics.json")
    atomic_torch_save({"a": torch.zeros(2)}, tmp_path / "weights.pt")
    assert _mode(tmp_path / "metrics.json") == _mode(tmp_path / "weights.pt") == _mode(tmp_path / "plain.txt")
    assert _mode(tmp_path / "metrics.json") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "plain.txt", "weights.pt"]  # no temp left


def test_save_compact_writes_a_file_others_may_read(tiny_resnet, image_batch, tmp_path):
    previous = os.umask(0o022)
    try:
        ex = ChannelExplorer(tiny_resnet, image_batch, sparsity=0.5, regrow_ratio=0.0, total=4,
                             builder=type(tiny_resnet))
        save_compact(ex.compact(), tmp_path / "compact.pt")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "compact.pt") == 0o644


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    def fail(_tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "metrics.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_load_compact_of_a_missing_file_names_it_and_what_it_should_be(tmp_path):
    missing = tmp_path / "runs" / "compact.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_compact(missing)
    assert str(info.value) == (f"no chex-tune compact model at {str(missing)!r}: give the path of a file written by "
                               "chex_tune.save_compact (a run's compact.pt)")
