"""From a trained model to a front: CHEX fine-tuned from trained weights against Torch-Pruning from the same weights.

The CPU protocol of ``benchmarks/train.md`` (resnet18, timm stem, 8,000 Fashion-MNIST images, 1,000 validation,
the 10,000-image test set). Per seed a dense model is trained for the protocol's 8 epochs; every row at every
budget then starts from that model and fine-tunes for the same epochs (``chex_tune.config.FINETUNE``: 4 at lr 0.02
unless ``--set`` says otherwise), so rows differ only in how they reach the budget:

- ``CHEX from trained``: the shipped trained start (``init``), CHEX settings as shipped (``--chex`` to change them);
- its variants (``ROWS``: uniform allocator, no regrowth, a shorter exploration, distillation from the dense
  model), and Torch-Pruning's workflow from the same model: one-shot group-L2 pruning to the budget (per-layer
  and global), then the same fine-tune (also distilled, to tell what distillation gives from what CHEX gives).

Rows are paired by seed (same dense model); the report gives each row's mean test accuracy with its 95% interval
and CHEX's paired difference to each row. Writes ``front.json`` and ``front.md`` under ``--out``. This is the
per-budget part of issue 25's benchmark; the family run and the sweep rows (cost against hypervolume) are not in it.

    python scripts/bench_front.py --levels 0.25 0.06 0.03 --seeds 0 1 2 3 --out benchmarks
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import chex_tune  # noqa: F401  (before timm)

# isort: split
import yaml

from chex_tune.config import RunConfig
from chex_tune.train.loop import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import MODES, PrunedTrainer, one_shot_tp, parse_settings  # noqa: E402
from benchlib import (  # noqa: E402
    interval,
    log,
    machine_info,
    machine_name,
    md_table,
    notes,
    paired_difference,
    recorded_argv,
    verdict,
    write_report,
)

CHEX = "CHEX from trained"
FAMILY = "family, cascade"
# row -> (how it reaches the budget, settings that differ from the shipped trained start)
ROWS = {
    CHEX: ("chex", {}),
    "CHEX from trained, uniform widths": ("chex", {"allocator": "uniform"}),
    "CHEX from trained, no regrowth": ("chex", {"regrow_ratio": 0.0}),
    "CHEX from trained, explore 25%": ("chex", {"explore_until": 0.25}),
    "CHEX from trained, distilled": ("chex", {"distill": 0.5}),
    "CHEX from trained, normalized": ("chex", {"allocator": "gamma-normalized"}),
    "CHEX from trained, normalized, explore 25%": ("chex", {"allocator": "gamma-normalized", "explore_until": 0.25}),
    "CHEX from trained, normalized, distilled": ("chex", {"allocator": "gamma-normalized", "distill": 0.5}),
    # Torch-Pruning's workflow in CHEX's settings (a point a trained-start space can reach): the first mask, uniform
    # widths by filter L1 norm, kept (no regrowth) and compacted at once, then the whole fine-tune on it
    "CHEX from trained, prune once": ("chex", {"allocator": "uniform", "regrow_ratio": 0.0, "explore_until": 0.01}),
    "CHEX from trained, prune once, distilled": ("chex", {"allocator": "uniform", "regrow_ratio": 0.0,
                                                          "explore_until": 0.01, "distill": 0.5}),
    # the first mask by Torch-Pruning's group magnitude instead of filter L1 (initial_scorer), then as above
    "CHEX from trained, prune once, magnitude": ("chex", {"allocator": "uniform", "regrow_ratio": 0.0,
                                                          "explore_until": 0.01, "initial_scorer": "magnitude"}),
    "CHEX from trained, prune once, magnitude, distilled": ("chex", {
        "allocator": "uniform", "regrow_ratio": 0.0, "explore_until": 0.01, "initial_scorer": "magnitude",
        "distill": 0.5}),
    "CHEX from trained, magnitude, uniform widths": ("chex", {"allocator": "uniform", "initial_scorer": "magnitude"}),
    "CHEX from trained, magnitude, normalized": ("chex", {"allocator": "gamma-normalized",
                                                          "initial_scorer": "magnitude"}),
    "CHEX from trained, magnitude, normalized, explore 25%": ("chex", {
        "allocator": "gamma-normalized", "initial_scorer": "magnitude", "explore_until": 0.25}),
    # A family, cascade shape: each level's member from the previous (larger) member, the first from the dense
    # model; the shipped trained start otherwise (its independent shape is the CHEX row: each from the dense model)
    FAMILY: ("chex", {}),
    "torch-pruning per-layer from trained": ("per-layer", {}),
    "torch-pruning global from trained": ("global", {}),
    "torch-pruning per-layer from trained, distilled": ("per-layer", {"distill": 0.5}),
}


def train_dense(base: dict, seed: int, workdir: Path) -> tuple[Path, dict]:
    """The seed's dense model, trained once per ``workdir`` (``--cache``: kept between runs of the script)."""
    out = workdir / f"dense-{seed}"
    if (out / "compact.pt").exists() and (out / "metrics.json").exists():
        return out / "compact.pt", json.loads((out / "metrics.json").read_text())
    config = RunConfig.from_dict({**base, "seed": seed, "sparsity": 0.0})
    result = Trainer(config, out).run()
    return out / "compact.pt", result


def run_row(name: str, level: float, base: dict, finetune: dict, chex: dict, seed: int, init: Path,
            workdir: Path) -> dict:
    """One row's fine-tune from the dense model ``init`` down to ``level`` of its MACs."""
    common = {k: v for k, v in base.items() if k not in ("epochs", "lr", "norm_init")}
    common.update(finetune, seed=seed, init=str(init))
    out = workdir / f"{name.replace(' ', '_').replace(',', '').replace('%', '')}-{level}-{seed}"
    method, changes = ROWS[name]
    if method == "chex":
        config = RunConfig.from_dict({**common, **chex, **changes, "macs_target": level})
        trainer = Trainer(config, out)
    else:
        config = RunConfig.from_dict({**common, **changes, "sparsity": 0.0})
        trainer = PrunedTrainer(config, out, prune_epochs=[0],
                                prune=one_shot_tp(level, global_pruning=method == "global"))
    start = time.perf_counter()
    result = trainer.run()
    keep = ("test_acc", "val_acc", "macs", "dense_macs", "params", "epochs", "train_seconds")
    return {**{k: result[k] for k in keep}, "row": name, "level": level, "seed": seed, "path": str(out / "compact.pt"),
            "macs_ratio": result["macs"] / result["dense_macs"], "wall_seconds": time.perf_counter() - start,
            "settings": {k: v for k, v in config.to_dict().items() if k in (
                "epochs", "lr", "explore_until", "allocator", "regrow_ratio", "distill", "initial_scorer")}}


def summarise(runs: list[dict], dense: list[dict]) -> dict:
    """Per level: each row's mean test accuracy with its 95% half-width, MACs and params, and CHEX - row paired."""
    out: dict = {"dense": {"test_acc": interval([d["test_acc"] for d in dense]), "seeds": [d["seed"] for d in dense]}}
    for level in sorted({r["level"] for r in runs}, reverse=True):
        here = [r for r in runs if r["level"] == level]
        chex = {r["seed"]: r["test_acc"] for r in here if r["row"] == CHEX}
        rows = {}
        for name in ROWS:
            mine = {r["seed"]: r for r in here if r["row"] == name}
            if not mine:
                continue
            seeds = sorted(set(mine) & set(chex))
            _, diff, half = paired_difference([chex[s] for s in seeds], [mine[s]["test_acc"] for s in seeds]) \
                if name != CHEX and seeds else (None, None, None)
            rows[name] = {"test_acc": interval([r["test_acc"] for r in mine.values()]), "seeds": sorted(mine),
                          "macs_ratio": statistics.mean(r["macs_ratio"] for r in mine.values()),
                          "params": statistics.mean(r["params"] for r in mine.values()),
                          "chex_minus_row": None if diff is None else [diff, half]}
        out[str(level)] = rows
    return out


def merged(stored: dict, new: dict) -> dict:
    """``new``'s runs added to ``stored``'s (a run of the same row, level and seed replaces the stored one)."""
    if (stored["protocol"], stored["finetune"], stored["chex"]) != (new["protocol"], new["finetune"], new["chex"]):
        raise SystemExit("--merge: front.json was made with another protocol, fine-tune or CHEX settings")
    key = lambda run: (run["row"], run["level"], run["seed"])  # noqa: E731
    replaced = {key(run) for run in new["runs"]}
    dense = {d["seed"]: d for d in stored["dense"] + new["dense"]}
    return {**new, "argv": stored["argv"] + new["argv"], "minutes": stored["minutes"] + new["minutes"],
            "dense": [dense[s] for s in sorted(dense)],
            "runs": [r for r in stored["runs"] if key(r) not in replaced] + new["runs"]}


def targets(rows: dict) -> list[list[str]]:
    """Issue 25's per-budget target: CHEX from the trained model beats Torch-Pruning per-layer from the same model
    by the mean at every budget, and beyond the 95% interval at 12% and below."""
    out = []
    for level, members in rows.items():
        tp = members.get("torch-pruning per-layer from trained") if level != "dense" else None
        if tp is None or tp["chex_minus_row"] is None:
            continue
        diff, half = tp["chex_minus_row"]
        strict = float(level) <= 0.12
        ok = diff - (half or 0) > 0 if strict else diff > 0
        out.append([f"CHEX − torch-pruning per-layer at {float(level):.0%}"
                    f"{' (beyond the interval)' if strict else ' (by the mean)'}",
                    f"{100 * diff:+.2f} ± {100 * (half or 0):.2f} pt", verdict(ok, f"{100 * diff:+.2f} pt")])
    return out


def markdown(data: dict, notes_path: Path | None = None) -> str:
    dense_mean, dense_half = data["rows"]["dense"]["test_acc"]
    lines = ["# CHEX from a trained model against Torch-Pruning from the same model",
             "", f"Protocol: {yaml.safe_dump(data['protocol'], default_flow_style=True, width=200).strip()}; "
                 f"fine-tune: {data['finetune']}; machine: {data['machine']}; {data['minutes']:.0f} min.",
             *[f"Command: `{' '.join(argv)}`" for argv in data["argv"]], "",
             f"Dense start (8 epochs): test {100 * dense_mean:.2f}% ± {100 * (dense_half or 0):.2f} "
             f"(seeds {data['rows']['dense']['seeds']}).", ""]
    for level, rows in data["rows"].items():
        if level == "dense":
            continue
        lines += [f"## {float(level):.0%} of dense MACs", ""]
        body = []
        for name, row in rows.items():
            mean, half = row["test_acc"]
            diff = row["chex_minus_row"]
            body.append([name, f"{100 * mean:.2f}% ± {100 * (half or 0):.2f}", f"{row['macs_ratio']:.3f}",
                         f"{row['params'] / 1e6:.2f}M", "" if diff is None else
                         f"{100 * diff[0]:+.2f} ± {100 * (diff[1] or 0):.2f} pt", str(row["seeds"])])
        lines += md_table(["row", "test acc", "MACs / dense", "params", "CHEX − row (paired)", "seeds"], body) + [""]
    lines += ["## Targets", "", *md_table(["target", "measured", "verdict"], targets(data["rows"])), ""]
    text = notes(notes_path) if notes_path is not None else None  # hand-written: design, what was tried
    return "\n".join(lines) + ("\n" + text if text else "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.25, 0.06, 0.03])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW")
    parser.add_argument("--chex", nargs="*", default=[], metavar="KEY=VALUE", help="CHEX settings of the CHEX rows")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="fine-tune settings (default: chex_tune.config.FINETUNE's epochs and lr)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--cache", type=Path, help="keep the dense models here between runs (default: not kept)")
    parser.add_argument("--merge", action="store_true",
                        help="add these runs to --out/front.json (a run of the same row, level and seed replaces the "
                             "stored one); the protocol and fine-tune must be the same")
    parser.add_argument("--report-only", action="store_true",
                        help="recompute the rows of --out/front.json and rewrite front.md (no training)")
    args = parser.parse_args(argv)
    from chex_tune.config import FINETUNE

    if args.report_only:
        data = json.loads((args.out / "front.json").read_text())
        data["rows"] = summarise(data["runs"], data["dense"])
        write_report(args.out, "front", data, markdown(data, args.out / "front_notes.md"), echo=True)
        return 0

    base, chex = dict(MODES["cpu"]), parse_settings(args.chex)
    finetune = {"epochs": FINETUNE["epochs"], "lr": FINETUNE["lr"],
                **{k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}}
    started, runs, dense = time.perf_counter(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            init, result = train_dense(base, seed, args.cache or Path(tmp))
            dense.append({"seed": seed, "test_acc": result["test_acc"], "train_seconds": result["train_seconds"]})
            log(f"seed {seed}: dense test {result['test_acc']:.4f} ({result['train_seconds']:.0f} s)")
            previous = init  # the family's cascade: each member from the one before (levels largest first)
            for level in sorted(args.levels, reverse=True):
                for name in args.rows:
                    run = run_row(name, level, base, finetune, chex, seed, previous if name == FAMILY else init,
                                  Path(tmp))
                    previous = Path(run["path"]) if name == FAMILY else previous
                    runs.append(run)
                    log(f"seed {seed} {name} @ {level}: test {run['test_acc']:.4f}, MACs {run['macs_ratio']:.3f} "
                        f"of dense, {run['params'] / 1e6:.2f}M params ({run['wall_seconds']:.0f} s)")
    data = {"argv": [recorded_argv(sys.argv if argv is None else ["scripts/bench_front.py", *argv])],
            "machine": machine_name(machine_info()), "protocol": base, "finetune": finetune, "chex": chex,
            "minutes": (time.perf_counter() - started) / 60, "dense": dense, "runs": runs}
    if args.merge:
        data = merged(json.loads((args.out / "front.json").read_text()), data)
    data["rows"] = summarise(data["runs"], data["dense"])
    write_report(args.out, "front", data, markdown(data, args.out / "front_notes.md"), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
