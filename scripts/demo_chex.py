"""A real CHEX run on Fashion-MNIST with the public API, sized for a 2-core CPU (~2-3 minutes).

Trains timm's resnet18 from scratch on a class-balanced subset while ChannelExplorer prunes and
regrows channels, then compacts the model, checks that the compact model predicts exactly what the
masked one does, and prints accuracy, MACs, params and CPU latency. This is the README's main job
until `chex-tune train` and `chex-tune sweep` exist.

    python scripts/demo_chex.py [--train-subset 20000] [--epochs 5] [--sparsity 0.5] [--out outputs/demo]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import pathlib
import time

import chex_tune  # noqa: F401  (before timm: lets it import where torchvision's ops cannot load)

# isort: split
import numpy as np
import timm
import torch
import torch.nn.functional as F

from chex_tune import ChannelExplorer, load_compact, save_compact
from chex_tune.core.flops import count_macs, count_params
from chex_tune.core.latency import measure_latency

DATA_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path) as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy()


def load_split(kind: str, data_dir: pathlib.Path):
    prefix = "train" if kind == "train" else "t10k"
    images_path = data_dir / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise SystemExit(f"Fashion-MNIST not found at {images_path}; install it with "
                         f"`sudo apt-get install dataset-fashion-mnist` or pass --data-dir")
    images = torch.from_numpy(read_idx(images_path)).float().div_(255).sub_(0.2860).div_(0.3530)
    labels = torch.from_numpy(read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz")).long()
    return images.unsqueeze(1), labels


def balanced_subset(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    per_class = count // 10
    picks = [torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=generator)]
             [:per_class] for c in range(10)]
    return torch.cat(picks)[torch.randperm(per_class * 10, generator=generator)]


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 2-pixel padding and horizontal flip, on the whole batch at once."""
    padded = F.pad(batch, (2, 2, 2, 2))
    dx, dy = (int(v) for v in torch.randint(0, 5, (2,), generator=generator))
    out = padded[:, :, dy:dy + 28, dx:dx + 28]
    flip = torch.rand(len(batch), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def accuracy(model, images, labels, batch_size=500) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--regrow-ratio", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs/demo"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    images, labels = load_split("train", args.data_dir)
    test_images, test_labels = load_split("test", args.data_dir)
    chosen = balanced_subset(labels, args.train_subset + 2000, generator)
    train_idx, val_idx = chosen[:args.train_subset], chosen[args.train_subset:]

    model = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    total = args.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total, pct_start=0.15)
    explorer = ChannelExplorer(model, images[:2], sparsity=args.sparsity, regrow_ratio=args.regrow_ratio,
                               period=max(1, steps_per_epoch // 4), total=total, optimizer=optimizer,
                               seed=args.seed)
    print(f"resnet18 on Fashion-MNIST: {len(train_idx)} training images, {args.epochs} epochs, "
          f"{len(explorer.state.groups)} channel groups, sparsity {args.sparsity}")
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        losses = []
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            loss = F.cross_entropy(model(augment(images[batch], generator)), labels[batch], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            explorer.step()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}/{args.epochs}: train_loss {np.mean(losses):.3f} "
              f"val_acc {accuracy(model, images[val_idx], labels[val_idx]):.4f} "
              f"sparsity {explorer.sparsity():.3f} MACs {explorer.macs() / 1e6:.1f}M "
              f"({time.time() - start:.0f} s)")

    small = explorer.compact().eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_compact(small, args.out / "compact.pt")
    reloaded = load_compact(args.out / "compact.pt")
    x = test_images[:1]
    with torch.no_grad():
        agree = torch.equal(model.eval()(test_images[:500]).argmax(1), reloaded(test_images[:500]).argmax(1))
    results = {
        "val_acc": accuracy(model, images[val_idx], labels[val_idx]),
        "test_acc_masked": accuracy(model, test_images, test_labels),
        "test_acc_compact": accuracy(reloaded, test_images, test_labels),
        "predictions_agree": agree,
        "macs": count_macs(small, x), "dense_macs": explorer.dense_macs(),
        "params": count_params(small), "dense_params": count_params(model),
        "latency_ms_compact": measure_latency(reloaded, (1, 28, 28), batch_size=32)["latency_ms"],
        "latency_ms_dense": measure_latency(model, (1, 28, 28), batch_size=32)["latency_ms"],
        "train_seconds": round(time.time() - start, 1),
        "widths": explorer.groups_summary,
    }
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2))
    print("\n| metric | dense | CHEX compact |\n|---|---|---|")
    print(f"| MACs | {results['dense_macs'] / 1e6:.1f}M | {results['macs'] / 1e6:.1f}M |")
    print(f"| params | {results['dense_params'] / 1e6:.2f}M | {results['params'] / 1e6:.2f}M |")
    print(f"| CPU latency, batch 32 | {results['latency_ms_dense']:.1f} ms | {results['latency_ms_compact']:.1f} ms |")
    print(f"| test accuracy | (masked) {results['test_acc_masked']:.4f} | {results['test_acc_compact']:.4f} |")
    print(f"\ncompact model: {args.out / 'compact.pt'} (chex_tune.load_compact); metrics: {args.out / 'metrics.json'}")
    if not agree:
        raise SystemExit("the compact model's predictions differ from the masked model's")


if __name__ == "__main__":
    main()
