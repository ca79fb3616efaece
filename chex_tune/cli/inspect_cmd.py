"""``chex-tune inspect MODEL``: what CHEX can prune in a timm model, before training anything."""

from __future__ import annotations

import argparse
import warnings

from chex_tune.units import format_count

HELP = "show a timm model's channel groups, what stays dense and why, and MACs/params at a sparsity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="timm model name, e.g. resnet50")
    parser.add_argument("--size", type=positive_int, default=224, help="input size in pixels (default 224)")
    parser.add_argument("--in-chans", type=positive_int, default=3)
    parser.add_argument("--num-classes", type=positive_int, default=1000)
    parser.add_argument("--sparsity", type=float, default=0.5, help="channel sparsity to cost (default 0.5)")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse prints the message and exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import torch  # here, not at the top: building the CLI's parser (chex-tune --version) imports no torch

    from chex_tune import ChannelExplorer
    from chex_tune.train.models import create_timm_model

    model = create_timm_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans)
    x = torch.randn(1, args.in_chans, args.size, args.size)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ex = ChannelExplorer(model, x, sparsity=args.sparsity, regrow_ratio=0.0, total=1)
    rows = ex.groups_summary
    print(f"{args.model} at {args.size}px: {len(rows)} channel groups, "
          f"{sum(r['prunable'] for r in rows)} prunable")
    print(f"{'group (root layer)':<40} {'channels':>8} {'width':>6}  note")
    for row in rows:
        print(f"{row['group']:<40} {row['channels']:>8} {row['width']:>6}  {row.get('reason', '')}")
    print(f"\nMACs {format_count(ex.dense_macs())} -> {format_count(ex.macs())} at uniform sparsity {args.sparsity} "
          f"(CHEX re-allocates widths during training); params {format_count(ex.dense_params())} -> "
          f"{format_count(ex.params())}")
    return 0
