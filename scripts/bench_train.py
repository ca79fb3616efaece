#!/usr/bin/env python
"""Training benchmark: CHEX against what a user would do instead, at equal epochs and equal MACs.

Every row trains resnet18 on Fashion-MNIST with chex-tune's own recipe (``chex_tune.train``) for the
same epochs; the pruning rows end at the same fraction of dense MACs (a MACs budget, or matched to it
by bisection). Rows at each MACs level:

- ``CHEX``: the shipped defaults with ``macs_target`` = the level;
- CHEX ablations (at 25% of dense MACs): no regrowth, uniform widths, L1 instead of CSS, uniform
  instead of projection regrowth, no re-allocation;
- ``uniform widths from scratch``: the same network with every layer narrowed alike, trained
  compact from the first step (what a user gets by just shrinking the model);
- ``CHEX widths from scratch``: the architecture CHEX found (same seed), re-initialised and trained
  compact from the first step: what the allocation alone is worth;
- ``torch-pruning``: dense training, then group-magnitude (L2) pruning with torch-pruning to the MACs
  target, then the rest of the same schedule on the pruned model; per-layer (the same ratio in every
  layer) or global, pruned once at 30% or 70% of training, and gradual (per-layer, in equal steps at
  the start of every epoch from 10% to 50% of training).

Each row runs with its seeds (``SEEDS``; ``LEVEL_SEEDS`` where the targets need a tighter interval),
seed-major, so a cut-short run has whole seeds; rows report the mean
test accuracy with its 95% t-interval and CHEX's paired difference to each row (same seeds). Writes
``train.json``, ``train.md`` and ``train_front.png`` under ``--out``.

    python scripts/bench_train.py                       # the CPU protocol (6 or 12 seeds a row: ~6 h here)
    python scripts/bench_train.py --quick               # CHEX and its 3 closest rivals at 3%, 24 seeds (~40 min)
    python scripts/bench_train.py --full --device cuda  # the GPU protocol: 30 epochs, all 55k images
    python scripts/bench_train.py --levels 0.25 --rows CHEX "uniform widths from scratch" --chex explore_until=0.3
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import chex_tune  # noqa: F401  (before timm)

# isort: split
import torch
import torch_pruning as tp
import yaml

from chex_tune.config import ChexConfig, RunConfig
from chex_tune.core.compact import make_recipe, prune_copy, removed_channels
from chex_tune.core.explorer import ChannelExplorer
from chex_tune.core.flops import count_macs
from chex_tune.core.groups import classifier_modules
from chex_tune.train.loop import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import (  # noqa: E402
    interval,
    log,
    machine_info,
    machine_name,
    md_table,
    notes,
    paired_difference,
    pyplot,
    recorded_argv,
    run_record,
    script_command,
    verdict,
    write_report,
)

LEVELS = (0.5, 0.25, 0.12, 0.06, 0.03)
SEEDS = tuple(range(6))
# Where the targets ask CHEX to win beyond the 95% interval (25% and 12% of dense MACs), the rows compared
# there get twice the seeds: at 6 the paired intervals were 0.2-0.7 pt wide, wider than the differences.
# 6% and 3% (added later: where the width allocation starts to matter) have as many. The ablations keep SEEDS.
LEVEL_SEEDS = {0.25: tuple(range(12)), 0.12: tuple(range(12)), 0.06: tuple(range(12)), 0.03: tuple(range(12))}
ABLATION_LEVEL = 0.25
ABLATIONS = {  # row name -> CHEX settings that differ from the defaults
    "CHEX no regrowth": {"regrow_ratio": 0.0},
    "CHEX uniform widths": {"allocator": "uniform"},
    "CHEX L1 pruning": {"scorer": "l1"},
    "CHEX uniform regrowth": {"sampler": "uniform"},
    "CHEX no re-allocation": {"reallocate": False},
    # method changes measured against the shipped defaults (see train_notes.md)
    "CHEX paper schedule": {"explore_until": 0.72, "regrow_ratio": 0.3},
    "CHEX per-MAC allocation": {"allocator": "gamma-per-cost"},
}
BASELINES = ("uniform widths from scratch", "CHEX widths from scratch",
             "torch-pruning per-layer @30%", "torch-pruning per-layer @70%",
             "torch-pruning global @30%", "torch-pruning global @70%", "torch-pruning gradual")
# Diagnostics (not in the default run; at the ablation level): how much the width allocation alone is worth
# at this scale. Two deliberately skewed allocations trained from scratch, against uniform widths from scratch:
# keep fraction proportional to (channels / fewest channels) ** -exponent, scaled to the MACs level.
SKEWED = {"early-heavy widths from scratch": 0.5, "late-heavy widths from scratch": -0.5,
          "equal channel counts from scratch": 1.0}  # every layer the same number of channels
ROW_NAMES = ("dense", "CHEX", *ABLATIONS, *BASELINES)
ALL_ROWS = (*ROW_NAMES, *SKEWED)
MODES = {
    # The GPU protocol: the small-input stem (456M MACs), all 55k training images, 30 epochs.
    "full": {"model": "resnet18", "dataset": "fashion-mnist", "stem": "small", "epochs": 30, "batch_size": 128,
             "val_size": 5000, "norm_init": 0.5},
    # The CPU protocol (see benchmarks/train_notes.md for why these settings).
    "cpu": {"model": "resnet18", "dataset": "fashion-mnist", "stem": "timm", "epochs": 8, "batch_size": 128,
            "train_subset": 8000, "val_size": 1000, "norm_init": 0.5},
}
# The development protocol (``--quick``): CHEX against its three closest rivals at the one level where they
# differ, with the seeds a 0.3 pt paired difference needs (24: half-widths 0.27-0.29 pt in the full table).
# At 3% of dense MACs every row trains a tiny compact model for most of the run, so it takes ~40 min here.
QUICK = {"rows": ["CHEX", "uniform widths from scratch", "torch-pruning gradual", "torch-pruning per-layer @30%"],
         "levels": [0.03], "seeds": list(range(24)), "out": Path("benchmarks/train_quick")}
MACS_TOLERANCE = 0.02  # every pruning row within 2% of its MACs target
TARGETS = {"near_dense_25": 0.010, "near_dense_50": 0.003, "time_ratio_25": 0.6}


# ---------------------------------------------------------------------------------- pruning rows
class PrunedTrainer(Trainer):
    """``Trainer`` on a dense config whose model is pruned physically at the start of chosen epochs.

    ``prune(trainer, step_index)`` removes channels from ``trainer.model`` in place and returns them as
    {root layer name: channel indices of the current model}; the trainer then restarts the optimizer
    (as CHEX does at compaction) and keeps the removed channels in dense coordinates, so the result is
    a compact model like CHEX's (saved, reloadable, counted the same way).
    """

    def __init__(self, config: RunConfig, out: Path, *, prune_epochs: list[int],
                 prune: Callable[[Trainer, int], dict[str, list[int]]]):
        super().__init__(config, out)
        self.prune_epochs, self.prune = prune_epochs, prune
        self.dense_channels = {name: layer.out_channels for name, layer in self.model.named_modules()
                               if hasattr(layer, "out_channels")}
        self.kept = {name: list(range(count)) for name, count in self.dense_channels.items()}
        self.prune_seconds = 0.0

    def train_epoch(self) -> dict:
        if self.epoch in self.prune_epochs:
            start = time.perf_counter()
            removed = self.prune(self, self.prune_epochs.index(self.epoch))
            for name, idxs in removed.items():
                drop = set(idxs)
                self.kept[name] = [k for i, k in enumerate(self.kept[name]) if i not in drop]
            dense_removed = {name: sorted(set(range(self.dense_channels[name])) - set(kept))
                             for name, kept in self.kept.items() if len(kept) < self.dense_channels[name]}
            self.model.chex_recipe = make_recipe(self.model, dense_removed, tuple(self.example.shape), **self.recipe)
            self._set_model(self.model)  # new parameters: a fresh optimizer
            self.compacted = True
            self.prune_seconds += time.perf_counter() - start  # choosing the ratio is not training
        return super().train_epoch()


def tp_prune(model, example, ratio: float, *, global_pruning: bool, in_place: bool = True,
             pruner: tp.pruner.MetaPruner | None = None) -> dict[str, list[int]]:
    """One torch-pruning step (group L2 magnitude); returns what it removed per root layer."""
    names = {m: n for n, m in model.named_modules()}
    if pruner is None:
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, global_pruning=global_pruning,
                                      ignored_layers=classifier_modules(model))
    removed = {}
    for group in pruner.step(interactive=True):
        removed[names[group[0].dep.target.module]] = list(group[0].idxs)
        if in_place:
            group.prune()
    return removed


def nearest_by_bisection(f: Callable[[float], float], target: float, low: float, high: float, *, steps: int,
                         increasing: bool) -> float:
    """The end of the last bracket, after ``steps`` bisections of [low, high], where the monotone ``f`` is nearest
    ``target``."""
    for _ in range(steps):
        mid = (low + high) / 2
        below = f(mid) < target if increasing else f(mid) > target  # where f meets the target: above mid
        low, high = (mid, high) if below else (low, mid)
    return min((low, high), key=lambda x: abs(f(x) - target))


def ratio_for_macs(model, example, target_macs: float, *, global_pruning: bool) -> float:
    """The torch-pruning ratio whose one-shot result lands nearest ``target_macs`` (bisection on copies)."""
    def macs_at(ratio: float) -> float:
        trial = copy.deepcopy(model).eval()
        tp_prune(trial, example, ratio, global_pruning=global_pruning)
        return count_macs(trial, example)

    return nearest_by_bisection(macs_at, target_macs, 0.0, 0.99, steps=12, increasing=False)


def one_shot_tp(level: float, *, global_pruning: bool):
    def prune(trainer: Trainer, _index: int) -> dict[str, list[int]]:
        example = trainer.example[:1]
        ratio = ratio_for_macs(trainer.model, example, level * trainer.dense_macs, global_pruning=global_pruning)
        return tp_prune(trainer.model, example, ratio, global_pruning=global_pruning)
    return prune


def gradual_tp(level: float, steps: int):
    """Per-layer torch-pruning in ``steps`` equal ratio steps (torch-pruning's iterative schedule)."""
    state = {}

    def prune(trainer: Trainer, index: int) -> dict[str, list[int]]:
        example = trainer.example[:1]
        if index == 0:
            ratio = ratio_for_macs(trainer.model, example, level * trainer.dense_macs, global_pruning=False)
            state["pruner"] = tp.pruner.MetaPruner(
                trainer.model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=ratio, iterative_steps=steps, ignored_layers=classifier_modules(trainer.model))
        return tp_prune(trainer.model, example, 0.0, global_pruning=False, pruner=state["pruner"])
    return prune


def from_scratch(masks_of: Callable[[ChannelExplorer], list[torch.Tensor]], level: float):
    """Prune the freshly initialised model before the first step: a narrow network trained from scratch."""
    def prune(trainer: Trainer, _index: int) -> dict[str, list[int]]:
        example = trainer.example[:1]
        explorer = ChannelExplorer(copy.deepcopy(trainer.model), example, total=1, macs_target=level,
                                   allocator="uniform", regrow_ratio=0.0, verify=False)
        removed = removed_channels(explorer.state.groups, masks_of(explorer))
        trainer.model = prune_copy(trainer.model, removed, example)
        return removed
    return prune


def skewed_masks(exponent: float, model, example, target_macs: float):
    """Masks whose keep fraction is proportional to (channels / fewest channels) ** -exponent, scaled by
    bisection so the pruned network lands nearest ``target_macs``."""
    def masks(explorer: ChannelExplorer) -> list[torch.Tensor]:
        groups = explorer.state.groups
        fewest = min(g.channels for g in groups)

        def at(scale: float) -> list[torch.Tensor]:
            out = []
            for group in groups:
                width = min(group.units, max(1, round(scale * (group.channels / fewest) ** -exponent * group.units)))
                mask = torch.zeros(group.units, dtype=torch.bool)
                mask[:width] = True
                out.append(mask)
            return out

        def macs(scale: float) -> float:
            return count_macs(prune_copy(model, removed_channels(groups, at(scale)), example), example)

        high = 1.0 / min((g.channels / fewest) ** -exponent for g in groups)
        return at(nearest_by_bisection(macs, target_macs, 0.0, high, steps=16, increasing=True))
    return masks


def uniform_masks(explorer: ChannelExplorer) -> list[torch.Tensor]:
    return explorer.state.masks  # step 0 of a uniform-allocator explorer: uniform widths at the budget


def widths_masks(widths: list[dict]) -> Callable[[ChannelExplorer], list[torch.Tensor]]:
    by_group = {w["group"]: w["width"] for w in widths}

    def masks(explorer: ChannelExplorer) -> list[torch.Tensor]:
        out = []
        for group in explorer.state.groups:
            mask = torch.zeros(group.units, dtype=torch.bool)
            mask[: by_group[group.name] // group.tile] = True
            out.append(mask)
        return out
    return masks


# ------------------------------------------------------------------------------------ one run
def row_config(name: str, level: float | None, base: dict, chex: dict, seed: int, device: str) -> RunConfig:
    common = {**base, "seed": seed, "device": device}
    if name == "CHEX" or name in ABLATIONS:
        return RunConfig.from_dict({**common, **chex, **ABLATIONS.get(name, {}), "macs_target": level})
    return RunConfig.from_dict({**common, "sparsity": 0.0})  # dense, and the dense start of every baseline


def run_row(name: str, level: float | None, base: dict, chex: dict, seed: int, device: str, workdir: Path,
            chex_widths: list[dict] | None, *, inspect: Callable[[Trainer], dict] | None = None) -> dict:
    """One row's run; ``inspect(trainer)`` (after training) adds its own entries to the result."""
    config = row_config(name, level, base, chex, seed, device)
    epochs = config.train.epochs
    out = workdir / f"{name.replace(' ', '_').replace('%', '').replace('@', '')}-{level}-{seed}"
    if name in ("dense", "CHEX") or name in ABLATIONS:
        trainer = Trainer(config, out)
    elif name == "uniform widths from scratch":
        trainer = PrunedTrainer(config, out, prune_epochs=[0], prune=from_scratch(uniform_masks, level))
    elif name == "CHEX widths from scratch":
        trainer = PrunedTrainer(config, out, prune_epochs=[0], prune=from_scratch(widths_masks(chex_widths), level))
    elif name in SKEWED:
        def prune(trainer: Trainer, index: int) -> dict[str, list[int]]:
            example = trainer.example[:1]
            masks = skewed_masks(SKEWED[name], trainer.model, example, level * trainer.dense_macs)
            return from_scratch(masks, level)(trainer, index)
        trainer = PrunedTrainer(config, out, prune_epochs=[0], prune=prune)
    elif name == "torch-pruning gradual":
        prune_epochs = sorted({max(1, round(f * epochs)) for f in (0.1, 0.2, 0.3, 0.4, 0.5)})
        trainer = PrunedTrainer(config, out, prune_epochs=prune_epochs, prune=gradual_tp(level, len(prune_epochs)))
    else:
        at = 0.3 if name.endswith("@30%") else 0.7
        trainer = PrunedTrainer(config, out, prune_epochs=[max(1, round(at * epochs))],
                                prune=one_shot_tp(level, global_pruning="global" in name))
    start = time.perf_counter()
    result = run_record(trainer.run())
    result["wall_seconds"] = time.perf_counter() - start
    result["prune_seconds"] = getattr(trainer, "prune_seconds", 0.0)
    result["widths"] = json.loads((out / "widths.json").read_text())
    if inspect is not None:
        result.update(inspect(trainer))
    return result


# ------------------------------------------------------------------------------------ statistics
def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per row (``name @ level``): mean test accuracy with its interval, costs, and CHEX's paired difference."""
    rows = {}
    for key, results in runs.items():
        accs = [r["test_acc"] for r in results]
        mean, half = interval(accs)
        rows[key] = {
            "name": results[0]["row"], "level": results[0]["level"], "seeds": [r["seed"] for r in results],
            "test_acc": mean, "test_acc_ci95": half, "test_acc_each": accs,
            "val_acc": statistics.mean(r["val_acc"] for r in results),
            "macs": statistics.mean(r["macs"] for r in results), "dense_macs": results[0]["dense_macs"],
            "macs_ratio": statistics.mean(r["macs"] for r in results) / results[0]["dense_macs"],
            "params": statistics.mean(r["params"] for r in results),
            "latency_ms": statistics.median(r["latency_ms"] for r in results),
            "train_seconds": statistics.mean(r["train_seconds"] for r in results),
            "train_seconds_each": [r["train_seconds"] for r in results],
            "device": results[0]["device"], "epochs": results[0]["epochs"],
        }
    for key, row in rows.items():
        chex_key = f"CHEX @ {row['level']}"
        if row["level"] is None or key == chex_key or chex_key not in runs:
            continue
        chex_by_seed = {r["seed"]: r["test_acc"] for r in runs[chex_key]}
        common = [r for r in runs[key] if r["seed"] in chex_by_seed]  # the row's seeds CHEX ran too, in its order
        if common:
            diffs, mean, half = paired_difference([chex_by_seed[r["seed"]] for r in common],
                                                  [r["test_acc"] for r in common])
            row["chex_minus_row"] = mean
            row["chex_minus_row_ci95"] = half
            row["chex_minus_row_each"] = diffs
    return rows


def on_common_seeds(a: dict, b: dict, key: str) -> tuple[float, float]:
    """Means of two rows' per-seed ``key`` over the seeds both ran: rows may have more seeds than dense, and
    each seed's runs share one machine (the times and accuracies of different machines do not compare)."""
    by_seed_a, by_seed_b = dict(zip(a["seeds"], a[key])), dict(zip(b["seeds"], b[key]))
    common = sorted(by_seed_a.keys() & by_seed_b.keys())
    return statistics.mean(by_seed_a[s] for s in common), statistics.mean(by_seed_b[s] for s in common)


def targets(rows: dict) -> list[tuple[str, str, str]]:
    lines = []
    dense = rows.get("dense @ None")
    for level in LEVELS:
        chex = rows.get(f"CHEX @ {level}")
        if chex is None:
            continue
        others = [r for k, r in rows.items() if r["level"] == level and k != f"CHEX @ {level}"]
        for row in others:
            gap = row["chex_minus_row"]
            lines.append((f"{level:.0%} MACs: CHEX >= {row['name']} (mean)", f"{gap * 100:+.2f} pt",
                          verdict(gap >= 0, f"{-gap * 100:.2f} pt")))
        if level in (0.25, 0.12):
            for row in others:
                if row["name"].startswith("torch-pruning") or row["name"] == "uniform widths from scratch":
                    gap, half = row["chex_minus_row"], row.get("chex_minus_row_ci95")
                    resolved = half is not None and gap - half > 0
                    lines.append((f"{level:.0%} MACs: CHEX beats {row['name']} beyond the 95% interval",
                                  f"{gap * 100:+.2f} pt ± {_pt(half)}",
                                  verdict(resolved, f"{(half or 0) * 100 - gap * 100:.2f} pt")))
        if dense and level in (0.25, 0.5):
            limit = TARGETS["near_dense_25" if level == 0.25 else "near_dense_50"]
            dense_acc, chex_acc = on_common_seeds(dense, chex, "test_acc_each")
            loss = dense_acc - chex_acc
            lines.append((f"{level:.0%} MACs: CHEX within {limit * 100:.1f} pt of dense", f"{loss * 100:+.2f} pt lost",
                          verdict(loss <= limit, f"{(loss - limit) * 100:.2f} pt")))
        if dense and level == 0.25:
            dense_seconds, chex_seconds = on_common_seeds(dense, chex, "train_seconds_each")
            ratio = chex_seconds / dense_seconds
            lines.append(("25% MACs: CHEX training time <= 0.6x dense", f"{ratio:.2f}x",
                          verdict(ratio <= TARGETS["time_ratio_25"], f"{ratio - TARGETS['time_ratio_25']:.2f}x")))
    return lines


def _pt(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} pt"


# ------------------------------------------------------------------------------------ reports
PLOT_SPAN_PT = 10  # accuracy shown below the best row


def plot_front(rows: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    names = list(dict.fromkeys(r["name"] for r in rows.values()))
    markers = "o^sDv<>phX*P8dH"
    for n, name in enumerate(names):
        points = sorted((r for r in rows.values() if r["name"] == name), key=lambda r: r["macs"])
        xs = [r["macs"] / 1e6 for r in points]
        ys = [r["test_acc"] * 100 for r in points]
        errs = [(r["test_acc_ci95"] or 0) * 100 for r in points]
        style = {"lw": 2.5, "color": "black", "zorder": 5} if name == "CHEX" else {"lw": 1, "alpha": 0.85}
        ax.errorbar(xs, ys, yerr=errs, marker=markers[n % len(markers)], capsize=3, label=name, **style)
    # a collapsed row (torch-pruning global @70% at 3%: ~66%) would squash the rest into a few pixels
    floor = max(ax.get_ylim()[0], max(r["test_acc"] for r in rows.values()) * 100 - PLOT_SPAN_PT)
    ax.set_ylim(bottom=floor)
    for r in rows.values():
        if r["test_acc"] * 100 < floor:  # off the axis: say where it is
            ax.annotate(f"{r['name']}: {r['test_acc']:.1%} (below)", (r["macs"] / 1e6, floor), xytext=(6, 12),
                        textcoords="offset points", fontsize=7, arrowprops={"arrowstyle": "->"})
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (millions, log scale)")
    ax.set_ylabel("test accuracy (%), mean over seeds, 95% interval")
    ax.set_title("Fashion-MNIST, resnet18: accuracy against MACs at equal epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def header_lines(data: dict) -> list[str]:
    """Title, protocol, machines, commands and the settings every row shares."""
    rows, base, machine = data["rows"], data["base"], data["machine"]
    # Runs merged from several machines: CPU training is deterministic on one machine, not across machines,
    # so each seed's paired runs came from one machine and the header says which ran how many.
    per_machine = collections.Counter(r.get("machine", machine_name(machine))
                                      for results in data["runs"].values() for r in results)
    machines = ", ".join(f"{name} ({count} runs)" for name, count in per_machine.items()) \
        if len(per_machine) > 1 else machine_name(machine)
    command = "` + `".join(script_command("bench_train.py", argv) for argv in data.get("commands", [data["argv"]]))
    throughput = "n/a (no dense row)" if math.isnan(data["throughput"]) else round(data["throughput"])
    uneven = " (not every row ran every seed: each row lists its own)" if any(
        row["seeds"] != data["seeds"] for row in rows.values()) else ""
    return ["# Training benchmark: CHEX against the simpler things a user could do", "",
            f"Protocol **{data['mode']}** on {machines}, {machine['torch_threads']} torch threads, "
            f"{data['minutes']:.0f} min in all; dense throughput "
            f"{throughput} training images/s. `{command}`", "",
            f"Every row: {', '.join(f'{k}={v}' for k, v in base.items())}, seeds {data['seeds']}{uneven}, chex-tune's "
            f"recipe (SGD Nesterov, warm-up + cosine, label smoothing). CHEX settings: "
            f"{', '.join(f'{k}={v}' for k, v in data['chex'].items())}. Test accuracy: mean over seeds ± the 95% "
            "t-interval's half-width; the test set (10,000 images) is evaluated once per run, after training. "
            "*CHEX − row*: the paired difference over the same seeds, mean ± 95% interval.", ""]


def level_table(members: dict) -> list[str]:
    """One MACs level's rows, best test accuracy first."""
    def cells(row: dict) -> list[str]:
        each = " / ".join(f"{a:.2%}" for a in row["test_acc_each"]) + f" ({_seed_list(row['seeds'])})"
        diff = (f"{row['chex_minus_row'] * 100:+.2f} ± {_pt(row.get('chex_minus_row_ci95'))}"
                if "chex_minus_row" in row else "")
        return [row["name"], f"{row['test_acc']:.2%} ± {_pt(row['test_acc_ci95'])}", each, diff,
                f"{row['macs'] / 1e6:.2f}M ({row['macs_ratio']:.1%})", f"{row['params'] / 1e6:.2f}M",
                f"{row['train_seconds']:.0f} s"]

    return md_table(["row", "test acc", "per seed (seeds)", "CHEX − row", "MACs", "params", "train time"],
                    map(cells, sorted(members.values(), key=lambda r: -r["test_acc"])))


def markdown(data: dict, notes_path: Path) -> str:
    """train.md: the header, a table per MACs level, the targets, the plot, then the hand-written notes."""
    out = header_lines(data)
    for level in (None, *LEVELS):
        members = {k: r for k, r in data["rows"].items() if r["level"] == level}
        if members:
            out += [f"## {'Dense' if level is None else f'{level:.0%} of dense MACs'}", "", *level_table(members), ""]
    out += ["## Targets", "", *md_table(["target", "measured", "verdict"], data["targets"])]
    out += ["", "![accuracy against MACs](train_front.png)", ""]
    text = notes(notes_path)  # hand-written: why this protocol, method changes tried
    if text is not None:
        out += [text]
    return "\n".join(out) + "\n"


def write_outputs(out: Path, data: dict) -> None:
    """train.json, train_front.png and train.md under ``out``; the .md is printed too."""
    write_report(out, "train", data, markdown(data, out / "train_notes.md"),
                 plot=("train_front.png", partial(plot_front, data["rows"])), echo=True)


# ------------------------------------------------------------------------------------ main
def _seed_list(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2 else \
        ", ".join(map(str, seeds))


def parse_settings(items: list[str]) -> dict:
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--chex {item!r} must look like KEY=VALUE")
        values[key] = yaml.safe_load(text)
    ChexConfig.from_dict({k: v for k, v in values.items()})  # validate names and values now
    return values


def plan(row_names: list[str], levels: list[float]) -> list[tuple[str, float | None]]:
    """(row, level) pairs in run order; CHEX first at each level (its widths feed a baseline)."""
    pairs = [("dense", None)] if "dense" in row_names else []
    for level in levels:
        for name in row_names:
            if name == "dense" or (name in (*ABLATIONS, *SKEWED) and level != ABLATION_LEVEL and len(levels) > 1):
                continue
            pairs.append((name, level))
    return pairs


def merged(path: Path, runs: dict, base: dict, chex: dict, commands: list, minutes: float):
    """``runs`` added to the runs stored in ``path`` (a run of the same row, level and seed replaces the stored
    one), with the commands and minutes of both; refused when the protocol or the CHEX settings differ."""
    if not path.exists():
        raise SystemExit(f"--merge: no {path} to add to")
    stored = json.loads(path.read_text())
    if stored["base"] != base or stored.get("chex_overrides", {}) != chex:
        raise SystemExit(f"--merge: {path} was made with another protocol or other CHEX settings "
                         f"({stored['base']}, {stored.get('chex_overrides', {})})")
    stored_on = machine_name(stored["machine"])  # runs from before runs recorded their machine
    together = {key: [{"machine": stored_on} | r for r in results] for key, results in stored["runs"].items()}
    for key, results in runs.items():
        new_seeds = {r["seed"] for r in results}
        together[key] = [r for r in together.get(key, []) if r["seed"] not in new_seeds] + results
        together[key].sort(key=lambda r: r["seed"])
    return together, stored.get("commands", [stored.get("argv", [])]) + commands, stored["minutes"] + minutes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the GPU protocol: 30 epochs, all images, small stem")
    parser.add_argument("--quick", action="store_true",
                        help=(f"the development protocol: {', '.join(QUICK['rows'])} at "
                              f"{', '.join(f'{level:.0%}' for level in QUICK['levels'])} of dense MACs, seeds "
                              f"{_seed_list(QUICK['seeds'])}, into {QUICK['out']} (~40 min on 2 cores); --rows, "
                              "--levels, --seeds and --out still override it").replace("%", "%%"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help=f"seeds for every row (default: {SEEDS[0]}-{SEEDS[-1]}, and "
                             + ", ".join(f"{s[0]}-{s[-1]} at level {level}" for level, s in LEVEL_SEEDS.items())
                             + " except the ablations)")
    parser.add_argument("--rows", nargs="+", choices=ALL_ROWS, metavar="ROW",
                        help=f"default: every row but the diagnostics ({', '.join(SKEWED)})")
    parser.add_argument("--levels", type=float, nargs="+")
    parser.add_argument("--chex", nargs="*", default=[], metavar="KEY=VALUE",
                        help="CHEX settings for the CHEX rows (a candidate method change)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override protocol settings")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", type=Path, help="default: benchmarks (with --quick: benchmarks/train_quick)")
    parser.add_argument("--merge", action="store_true",
                        help="add these runs (e.g. more seeds of some rows) to the train.json in --out; the protocol "
                             "and CHEX settings must be the same")
    parser.add_argument("--report-only", action="store_true",
                        help="recompute the rows and targets of --out/train.json from its runs; rewrite train.md, "
                             "train_front.png (no training)")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {"rows": list(ROW_NAMES), "levels": list(LEVELS), "out": Path("benchmarks")}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.full:
        raise SystemExit("--quick is a CPU protocol; it does not combine with --full")
    return args


def rewrite_report(out: Path) -> None:
    """--report-only: the rows and targets of ``out``/train.json recomputed from its runs, and its files rewritten."""
    data = json.loads((out / "train.json").read_text())
    data["rows"] = summarise(data["runs"])
    data["targets"] = targets(data["rows"])
    write_outputs(out, data)


def run_all(args: argparse.Namespace, base: dict, chex: dict, machine: dict) -> dict[str, list[dict]]:
    """Every planned row at its levels and seeds, seed-major; {``row @ level``: that row's run results}."""
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    pairs = plan(list(args.rows), args.levels)
    host = machine_name(machine)

    def seeds_of(name: str, level: float | None):
        if args.seeds is not None:
            return args.seeds
        return SEEDS if name in (*ABLATIONS, *SKEWED) else LEVEL_SEEDS.get(level, SEEDS)

    with tempfile.TemporaryDirectory() as workdir:
        for seed in sorted({seed for name, level in pairs for seed in seeds_of(name, level)}):
            widths: dict[float, list[dict]] = {}
            todo = [(name, level) for name, level in pairs if seed in seeds_of(name, level)]
            for n, (name, level) in enumerate(todo, 1):
                result = run_row(name, level, base, chex, seed, args.device, Path(workdir), widths.get(level))
                if name == "CHEX":
                    widths[level] = result["widths"]
                result.update(row=name, level=level, seed=seed, machine=host)
                if level is not None and abs(result["macs_ratio"] - level) > MACS_TOLERANCE * level:
                    log(f"WARNING {name} @ {level}: MACs ratio {result['macs_ratio']:.4f} is not within "
                        f"{MACS_TOLERANCE:.0%} of the target")
                runs.setdefault(f"{name} @ {level}", []).append(result)
                log(f"seed {seed} [{n}/{len(todo)}] {name} @ {level}: test {result['test_acc']:.4f} "
                    f"MACs {result['macs_ratio']:.3f} train {result['train_seconds']:.0f} s "
                    f"({(time.perf_counter() - started) / 60:.1f} min so far)")
    return runs


def assemble(mode: str, base: dict, chex: dict, runs: dict, commands: list, minutes: float, machine: dict) -> dict:
    """train.json's content: the protocol, the runs, and the rows and targets summarised from them."""
    rows = summarise(runs)
    dense_runs = runs.get("dense @ None", [])
    throughput = (statistics.mean(r["train_size"] * r["epochs"] / r["train_seconds"] for r in dense_runs)
                  if dense_runs else float("nan"))
    seeds = sorted({r["seed"] for results in runs.values() for r in results})
    data = {"mode": mode, "base": base, "chex": {**ChexConfig().to_dict(), **chex}, "chex_overrides": chex,
            "seeds": seeds, "argv": commands[0], "commands": commands, "machine": machine,
            "torch": torch.__version__, "minutes": minutes, "throughput": throughput, "rows": rows,
            "targets": targets(rows),
            "runs": {k: [{key: value for key, value in r.items() if key != "widths"} | {"widths": r["widths"]}
                         for r in v] for k, v in runs.items()}}
    data["chex"] = {k: v for k, v in data["chex"].items() if k not in ("seed", "macs_target", "sparsity")}
    return data


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_only:
        rewrite_report(args.out)
        return 0
    protocol = "full" if args.full else "cpu"  # --quick: the CPU protocol's settings on fewer rows
    base = dict(MODES[protocol]) | {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.data_dir:
        base["data_dir"] = args.data_dir
    chex = parse_settings(args.chex)
    if "CHEX widths from scratch" in args.rows and "CHEX" not in args.rows:
        raise SystemExit("the row 'CHEX widths from scratch' needs the row 'CHEX' (its widths)")
    started = time.perf_counter()
    machine = machine_info()
    runs = run_all(args, base, chex, machine)
    commands = [recorded_argv(sys.argv[1:] if argv is None else argv)]
    minutes = (time.perf_counter() - started) / 60
    if args.merge:
        runs, commands, minutes = merged(args.out / "train.json", runs, base, chex, commands, minutes)
    write_outputs(args.out, assemble("quick" if args.quick else protocol, base, chex, runs, commands, minutes,
                                     machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
