"""Resumable training checkpoints: plain tensors and Python values, written atomically, read without pickle.

A checkpoint is what an epoch boundary needs to continue bit-identically: model weights (or, once the
model is compacted, the recipe of its structure plus weights), optimizer and LR-schedule state, the
explorer's masks and snapshot, the global RNG states and the history so far.
"""

from __future__ import annotations

import os

import torch

from chex_tune.core._atomic import atomic_torch_save
from chex_tune.core.errors import torch_load

FILENAME = "checkpoint.pt"


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    atomic_torch_save({**state, "rng": rng_states()}, path)


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """Read a checkpoint (``weights_only``). Its ``rng`` entry goes to ``set_rng_states`` once the run is
    rebuilt: rebuilding draws random numbers itself."""
    return torch_load(path, "chex-tune checkpoint", map_location=map_location,
                      hint="; delete it to train from the start, or use another --out")


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def config_differences(saved: dict, current: dict, *, ignore=("device", "num_workers", "compile")) -> list[str]:
    """Settings that differ between a checkpoint and this run ("key: saved -> now")."""
    keys = sorted((set(saved) | set(current)) - set(ignore))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
