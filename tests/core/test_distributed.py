"""Under torch.distributed every rank ends an exploration step with rank 0's masks."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from chex_tune import ChannelExplorer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1]))
    from conftest import TinyResNet

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different weights on purpose: the masks would differ without broadcast
        model = TinyResNet()
        ex = ChannelExplorer(model, torch.randn(2, 3, 16, 16), period=1, total=4, seed=rank, verify=False)
        ex.step()
        torch.save([m.clone() for m in ex.state.masks], f"{out_dir}/masks{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_share_rank_zeros_masks(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "masks0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "masks1.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
