#!/usr/bin/env python
"""How much of the training benchmark's seed spread is evaluation noise? (a diagnostic for bench_train.py)

The training benchmark (``bench_train.py``) needs 6-12 seeds a row to resolve differences of 0.2-0.4 pt.
Part of a paired difference's spread is the finite test set: two models that disagree on a fraction d of
the images differ in test accuracy by a noise of standard deviation about sqrt(d / n) on n images, even at
equal true accuracy. If that part were large, scoring on more images would be a cheap way to a tighter
protocol: the CPU protocol trains on 8,000 Fashion-MNIST images and validates on 1,000, so 51,000 training
images are never seen and could join the 10,000 test images.

This script trains some of ``bench_train.py``'s rows with its protocol (same code, same seeds: the test
accuracies are the committed table's on the same machine), scores every compact model on the test set and
on the 51,000 unseen training images, and splits the variance of CHEX's paired difference to each row
into the part the test set's size explains and the rest (the training's own seed-to-seed spread).
Writes ``eval_noise.json`` and ``eval_noise.md`` under ``--out``.

    python scripts/bench_eval_noise.py --levels 0.12 0.25 --seeds 6 7 8 9 10 11
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import chex_tune  # noqa: F401  (before timm)

# isort: split
import numpy as np
import torch

from chex_tune.train.data import STATS, Data, TensorSplit, carve_split, read_fashion_mnist, resize

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import MODES, run_row  # noqa: E402
from benchlib import log, machine_info, md_table, paired_difference, write_report  # noqa: E402

ROWS = ("CHEX", "uniform widths from scratch", "torch-pruning gradual")


def unseen_images(trainer) -> Data:
    """The training images of the run's dataset that it neither trained nor validated on, as one split."""
    settings, data = trainer.settings, trainer.data
    images, labels, _, _ = read_fashion_mnist(settings.data_dir)
    train_idx, val_idx = carve_split(labels, val_size=settings.val_size, train_subset=settings.train_subset,
                                     dataset=settings.dataset)
    rest = np.setdiff1d(np.arange(len(labels)), np.concatenate([train_idx, val_idx]))
    split = TensorSplit(torch.from_numpy(resize(images[rest], data.image_size)), torch.from_numpy(labels[rest]),
                        data.device)
    mean, std = STATS[settings.dataset]  # normalised as the run's own splits are
    return Data(name=f"{settings.dataset} unseen", num_classes=data.num_classes, mean=mean, std=std,
                train=split, val=split, test=split, device=data.device)


@torch.no_grad()
def correct(model: torch.nn.Module, data: Data) -> np.ndarray:
    """Per test image of ``data``: did ``model`` classify it right."""
    model.eval()
    return np.concatenate([(model(images).argmax(1) == labels).cpu().numpy()
                           for images, labels in data.eval_batches("test")])


def paired(chex: list[np.ndarray], row: list[np.ndarray]) -> dict:
    """CHEX − row over seeds on these images: mean, sd, 95% half-width, disagreement and its noise share."""
    diffs, mean, half = paired_difference([a.mean() for a in chex], [b.mean() for b in row])
    disagree = statistics.mean(float((a != b).mean()) for a, b in zip(chex, row))
    sd = statistics.stdev(diffs)
    eval_sd = math.sqrt(disagree / len(chex[0]))  # the difference's noise from a finite image set
    return {"images": len(chex[0]), "mean": mean, "ci95": half, "sd": sd, "disagreement": disagree,
            "eval_sd": eval_sd, "eval_share": min(1.0, eval_sd ** 2 / sd ** 2) if sd > 0 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.12, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, metavar="ROW",
                        help="CHEX (always first) and the rows to compare it with")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args(argv)
    rows = ["CHEX", *(r for r in args.rows if r != "CHEX")]
    base = dict(MODES["cpu"])
    started = time.perf_counter()
    pool: Data | None = None
    runs, hits = [], {}  # hits[row @ level][images] -> one array of per-image correctness per seed

    def score(trainer) -> dict:
        nonlocal pool
        pool = pool or unseen_images(trainer)
        return {"correct": (correct(trainer.small, trainer.data), correct(trainer.small, pool))}

    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for level in args.levels:
                for name in rows:
                    result = run_row(name, level, base, {}, seed, "cpu", Path(workdir), None, inspect=score)
                    test, unseen = result.pop("correct")
                    per_row = hits.setdefault(f"{name} @ {level}", {"test": [], "unseen": []})
                    per_row["test"].append(test)
                    per_row["unseen"].append(unseen)
                    runs.append({"row": name, "level": level, "seed": seed, "test_acc": result["test_acc"],
                                 "unseen_acc": float(unseen.mean()), "macs_ratio": result["macs_ratio"]})
                    log(f"seed {seed} {name} @ {level}: test {result['test_acc']:.4f} unseen {unseen.mean():.4f} "
                        f"({(time.perf_counter() - started) / 60:.1f} min so far)")
    for per_row in hits.values():  # both image sets as one
        per_row["all"] = [np.concatenate(pair) for pair in zip(per_row["test"], per_row["unseen"])]
    comparisons = []
    for level in args.levels:
        chex = hits[f"CHEX @ {level}"]
        for name in rows[1:]:
            row = hits[f"{name} @ {level}"]
            comparisons.append({"level": level, "row": name,
                                **{which: paired(chex[which], row[which]) for which in ("test", "unseen", "all")}})
    data = {"base": base, "seeds": args.seeds, "levels": args.levels, "rows": rows, "machine": machine_info(),
            "minutes": (time.perf_counter() - started) / 60, "runs": runs, "comparisons": comparisons}
    write_report(args.out, "eval_noise", data, markdown(data), final_newline=False)
    return 0


def markdown(data: dict) -> str:
    m = data["machine"]
    rows = "" if tuple(data["rows"]) == ROWS else " --rows " + " ".join(f"'{r}'" for r in data["rows"])
    out = ["# How much of the training benchmark's seed spread is evaluation noise", "",
           f"`python scripts/bench_eval_noise.py --levels {' '.join(map(str, data['levels']))} --seeds "
           f"{' '.join(map(str, data['seeds']))}{rows}` on {m['cpu_model']} ({m['nproc']} cores), "
           f"{data['minutes']:.0f} min. The rows are trained with `bench_train.py`'s CPU protocol; every compact "
           "model is scored on the 10,000 test images and on the 51,000 Fashion-MNIST training images outside "
           "its 8,000-image training subset and 1,000-image validation split.", "",
           "*CHEX − row*: the paired difference over seeds (mean ± 95% interval, and its sd). *disagree*: the "
           "share of images on which CHEX and the row differ in correctness (mean over seeds). *eval sd*: "
           "sqrt(disagree / images), the sd a finite image set adds to a paired difference; *eval share*: "
           "its part of the difference's variance.", "",
           *md_table(["level", "row", "images", "CHEX − row", "sd", "disagree", "eval sd", "eval share"],
                     comparison_rows(data["comparisons"])),
           "", *md_table(["level", "row", "seed", "test acc", "unseen acc"],
                         ([f"{r['level']:.0%}", r["row"], str(r["seed"]), f"{r['test_acc']:.2%}",
                           f"{r['unseen_acc']:.2%}"] for r in data["runs"]))]
    return "\n".join(out) + "\n"


def comparison_rows(comparisons: list[dict]):
    """Table cells of each comparison, on each image set."""
    for c in comparisons:
        for which, label in (("test", "10,000 test"), ("unseen", "51,000 unseen"), ("all", "61,000 both")):
            p = c[which]
            share = "" if p["eval_share"] is None else f"{p['eval_share']:.0%}"
            diff = f"{p['mean'] * 100:+.2f} ± {p['ci95'] * 100:.2f} pt"
            yield [f"{c['level']:.0%}", c["row"], label, diff, f"{p['sd'] * 100:.2f} pt", f"{p['disagreement']:.1%}",
                   f"{p['eval_sd'] * 100:.2f} pt", share]


if __name__ == "__main__":
    sys.exit(main())
