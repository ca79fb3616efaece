"""From a trained model to a front: CHEX fine-tuned from trained weights, the family, Torch-Pruning from the same
weights, and what the front costs against training from scratch.

The CPU protocol of ``benchmarks/train.md`` (resnet18, timm stem, 8,000 Fashion-MNIST images, 1,000 validation,
the 10,000-image test set). Per seed a dense model is trained for the protocol's 8 epochs; every row at every
budget then starts from that model and fine-tunes for the same epochs (``chex_tune.config.FINETUNE``: 4 at lr 0.02
unless ``--set`` says otherwise), so rows differ only in how they reach the budget (``ROWS``):

- ``CHEX from trained``: the shipped trained start (``init``), CHEX settings as shipped (``--chex`` to change them),
  and its variants (distillation from the dense model, the first mask by filter L1, CHEX's exploration as the
  earlier default ran it and with other allocators);
- ``family, cascade``: ``chex-tune family``'s default shape, each budget from the previous member;
- Torch-Pruning's workflow from the same model: one-shot group-L2 pruning to the budget (per-layer and global),
  then the same fine-tune (also distilled, to tell what distillation gives from what CHEX gives).

Rows are paired by seed (same dense model); ``benchmarks/train.json``'s CHEX and uniform-width rows (from scratch,
same seeds and dense models) are read in as two more. The report gives each row's mean test accuracy with its 95%
interval and CHEX's paired difference to each row, issue 25's targets, and each row's front over the budgets as
hypervolume against training cost in dense epochs (``front.png``). ``--sweep-trials N`` adds a sweep at this
protocol to that comparison (``--sweep``: the shipped space from scratch by random search, TPE or random search with
Pareto-ASHA, or the shipped fine-tune space with every trial forked from the dense model). Writes ``front.json``,
``front.md`` and ``front.png`` under ``--out``.

    python scripts/bench_front.py --levels 0.5 0.25 0.12 0.06 0.03 --seeds 0 1 2 3 4 5 --cache DIR --out benchmarks
    python scripts/bench_front.py --sweep-trials 24 --sweep tpe --seeds 0 --out benchmarks
"""

from __future__ import annotations

import argparse
import json
import shlex
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
from chex_tune.tuning.pareto import hypervolume_2d

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
    pyplot,
    recorded_argv,
    run_record,
    verdict,
    write_report,
)

CHEX = "CHEX from trained"
FAMILY = "family, cascade"
# benchmarks/train.json's CHEX row: 8 epochs from random weights on the same protocol, seeds and test set (its
# dense row is this script's dense start, seed for seed); read, not run
SCRATCH = "CHEX from scratch"
NARROW = "uniform narrow network from scratch"  # train.json's "uniform widths from scratch": no pruning at all
FROM_TRAIN_JSON = {SCRATCH: "CHEX", NARROW: "uniform widths from scratch"}  # this report's row -> train.json's
TRAIN_JSON = Path(__file__).resolve().parent.parent / "benchmarks" / "train.json"
# the rows whose members, one per level, make a front (hypervolume against training cost)
FRONT_ROWS = (FAMILY, CHEX, "CHEX from trained, distilled", "torch-pruning per-layer from trained", SCRATCH, NARROW)
SWEEP = "from-scratch sweep of the shipped space"
SHIPPED_SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "fashion_mnist_resnet18.yaml"
FINETUNE_SPACE = SHIPPED_SPACE.with_name("fashion_mnist_resnet18_finetune.yaml")
# CHEX's exploration from the trained weights, as the trained start was before pruning once became its default
# (global |gamma| allocation, regrowth, exploring for half the fine-tune, the first mask by filter L1)
EXPLORING = {"allocator": "gamma", "regrow_ratio": 0.1, "explore_until": 0.5, "initial_scorer": "l1"}
# row -> (how it reaches the budget, settings that differ from the shipped trained start); front_probes.json holds
# the probes behind the default, run under the earlier default (their rows' settings are in each run)
ROWS = {
    CHEX: ("chex", {}),
    "CHEX from trained, distilled": ("chex", {"distill": 0.5}),
    "CHEX from trained, first mask by filter L1": ("chex", {"initial_scorer": "l1"}),
    "CHEX from trained, exploring (earlier default)": ("chex", EXPLORING),
    "CHEX from trained, exploring, uniform widths": ("chex", {**EXPLORING, "allocator": "uniform"}),
    "CHEX from trained, exploring, normalized": ("chex", {**EXPLORING, "allocator": "gamma-normalized"}),
    "CHEX from trained, exploring 25%, normalized": ("chex", {**EXPLORING, "allocator": "gamma-normalized",
                                                              "explore_until": 0.25}),
    # A family, cascade shape: each level's member from the previous (larger) member, the first from the dense
    # model; the shipped trained start otherwise (its independent shape is the CHEX row: each from the dense model)
    "CHEX from trained, normalized widths": ("chex", {"allocator": "gamma-normalized"}),
    "CHEX from trained, widths by gamma per MAC": ("chex", {"allocator": "gamma-per-cost"}),
    FAMILY: ("chex", {}),
    "torch-pruning per-layer from trained": ("per-layer", {}),
    "torch-pruning global from trained": ("global", {}),
    "torch-pruning per-layer from trained, distilled": ("per-layer", {"distill": 0.5}),
}


def train_dense(base: dict, seed: int, workdir: Path) -> tuple[Path, dict]:
    """The seed's dense model, trained once per ``workdir`` (``--cache``: kept between runs of the script)."""
    out = workdir / f"dense-{seed}"
    if (out / "compact.pt").exists() and (out / "metrics.json").exists():
        return out / "compact.pt", {**json.loads((out / "metrics.json").read_text()), "cached": True}
    config = RunConfig.from_dict({**base, "seed": seed, "sparsity": 0.0})
    result = run_record(Trainer(config, out).run())
    return out / "compact.pt", {**result, "cached": False}


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
    result = run_record(trainer.run())
    keep = ("test_acc", "val_acc", "macs", "dense_macs", "params", "epochs", "train_seconds")
    return {**{k: result[k] for k in keep}, "row": name, "level": level, "seed": seed, "path": str(out / "compact.pt"),
            "macs_ratio": result["macs"] / result["dense_macs"], "wall_seconds": time.perf_counter() - start,
            "settings": {k: v for k, v in config.to_dict().items() if k in (
                "epochs", "lr", "explore_until", "allocator", "regrow_ratio", "distill", "initial_scorer")}}


def scratch_runs(levels: list[float], seeds: list[int], path: Path = TRAIN_JSON) -> list[dict]:
    """``path``'s runs of the rows ``FROM_TRAIN_JSON`` at these levels and seeds, each with its training cost in
    dense epochs of the machine it ran on (``dense_epochs``). train.json ran on two machines and its dense row on
    one; the other's dense epoch is scaled by the two machines' mean time for the one row both ran (CHEX at 25%)."""
    if not path.exists():
        return []
    stored = json.loads(path.read_text())["runs"]
    dense_epoch: dict[str, list[float]] = {}  # machine -> seconds of one dense epoch there
    for run in stored.get("dense @ None", []):
        dense_epoch.setdefault(run["machine"], []).append(run["train_seconds"] / run["epochs"])
    epoch = {machine: statistics.mean(times) for machine, times in dense_epoch.items()}
    both: dict[str, list[float]] = {}  # machine -> train seconds of the row run on every machine
    for run in stored.get("CHEX @ 0.25", []):
        both.setdefault(run["machine"], []).append(run["train_seconds"])
    measured = next((m for m in epoch if m in both), None)
    for machine, times in both.items():
        if machine not in epoch and measured is not None:
            epoch[machine] = epoch[measured] * statistics.mean(times) / statistics.mean(both[measured])
    keep = ("test_acc", "val_acc", "macs", "dense_macs", "params", "epochs", "train_seconds", "macs_ratio", "seed")
    return [{**{k: run[k] for k in keep}, "row": row, "level": level, "machine": run["machine"],
             "dense_epochs": run["train_seconds"] / epoch[run["machine"]]}
            for row, theirs in FROM_TRAIN_JSON.items() for level in levels
            for run in stored.get(f"{theirs} @ {level}", []) if run["seed"] in seeds and run["machine"] in epoch]


def dense_epoch_seconds(dense: list[dict]) -> float:
    """One dense epoch's seconds on this run's machine: the median epoch of the dense models trained in this run
    (a cached model's times were taken under other conditions), or of every dense model where none was."""
    fresh = [t for d in dense if not d.get("cached") for t in d.get("epoch_seconds", [])]
    every = [t for d in dense for t in d.get("epoch_seconds", [])]
    return statistics.median(fresh or every)


def fronts(data: dict) -> dict:
    """Per row of ``FRONT_ROWS`` and seed: the front of its members (one per level) as the hypervolume of
    (val_acc, MACs / dense) and of (test_acc, MACs / dense) against the reference (0, dense MACs), and its
    training cost in dense epochs: the members' own (``dense_epochs``, or their seconds over one dense epoch here)
    plus, for a row that starts from the dense model, its training."""
    epochs = data["protocol"]["epochs"]
    dense = {d["seed"]: d for d in data["dense"]}
    epoch_seconds = dense_epoch_seconds(data["dense"])
    runs = data["runs"] + data.get("scratch", [])
    levels = {r["level"] for r in data["runs"]}
    out = {}
    for name in FRONT_ROWS:
        per_seed = []
        for seed in sorted(dense):
            members = [r for r in runs if r["row"] == name and r["seed"] == seed and r["level"] in levels]
            if {m["level"] for m in members} != levels:
                continue
            cost = sum(m.get("dense_epochs", m["train_seconds"] / epoch_seconds) for m in members)
            volume = {acc: hypervolume_2d([[m[acc], m["macs_ratio"]] for m in members], [True, False],
                                          reference=[0.0, 1.0]) for acc in ("val_acc", "test_acc")}
            per_seed.append({"seed": seed, "hypervolume": volume["val_acc"], "test_hypervolume": volume["test_acc"],
                             "members_cost": cost, "cost": cost + (0 if name in FROM_TRAIN_JSON else epochs)})
        if per_seed:
            out[name] = front_row(per_seed)
    return {**out, **sweep_fronts(data)}


# --sweep: what each kind of sweep runs (the space, the Optuna sampler, Pareto-ASHA, a fork of the trained model)
SWEEPS = {
    "random": {"row": SWEEP, "space": SHIPPED_SPACE, "sampler": "random"},
    "tpe": {"row": "from-scratch sweep, TPE", "space": SHIPPED_SPACE, "sampler": "tpe"},
    "pareto-asha": {"row": "from-scratch sweep, Pareto-ASHA", "space": SHIPPED_SPACE, "sampler": "random",
                    "early_stop": True},
    "forked": {"row": "sweep forked from the trained model", "space": FINETUNE_SPACE, "sampler": "random",
               "forked": True},
}


def run_sweep_row(kind: str, base: dict, trials: int, seed: int, cache: Path | None) -> dict:
    """A sweep of ``SWEEPS[kind]`` at this protocol, one trial at a time on all cores, through ``run_sweep`` as a
    user would run it: the shipped from-scratch space with this protocol's fixed settings (every trial trained from
    scratch for its epochs), or the shipped fine-tune space with every trial forked from the seed's dense model."""
    from chex_tune.tuning.space import SearchSpace
    from chex_tune.tuning.sweep import SweepOptions, run_sweep
    from chex_tune.tuning.track.store import client_for, tracking_uri_for

    how = SWEEPS[kind]
    settings = SearchSpace.load(how["space"]).to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        init = None
        if how.get("forked"):
            init, _ = train_dense(base, seed, cache or Path(tmp))
        else:
            settings["fixed"] = {**settings["fixed"], **base}
        source = Path(tmp) / "front_sweep.yaml"
        source.write_text(yaml.safe_dump(settings))
        started = time.perf_counter()
        result = run_sweep(SearchSpace.load(source), SweepOptions(
            trials=trials, concurrent=1, optuna_sampler=how["sampler"], seed=seed, store=str(Path(tmp) / "store"),
            experiment="front-sweep", early_stop=how.get("early_stop", False), init=init and str(init)), log=log)
        wall = time.perf_counter() - started
        # a trial Pareto-ASHA stopped logged no train_seconds (its epochs' seconds, read while the store exists) ...
        client = client_for(tracking_uri_for(Path(tmp) / "store"))
        # nor dense_macs: every trial prunes the same dense model
        dense_macs = next(row.metrics["dense_macs"] for row in result.rows if "dense_macs" in row.metrics)
        rows = [{"val_acc": row.metrics["val_acc"], "test_acc": row.metrics.get("test_acc"),
                 "macs_ratio": row.metrics["macs"] / dense_macs, "stopped_at": row.stopped_at,
                 "train_seconds": row.metrics["train_seconds"] if row.finished else
                 sum(m.value for m in client.get_metric_history(row.run_id, "epoch_seconds")),
                 "params": {k: row.params[k] for k in row.searched}}
                for row in result.rows if row.finished or row.stopped_at is not None]
    return {"kind": kind, "trials": trials, "seed": seed, "sampler": how["sampler"], "wall_seconds": wall,
            "finished": rows, "failed": len(result.rows) - len(rows)}


def sweep_fronts(data: dict) -> dict:
    """The recorded sweeps' fronts as rows of ``fronts``, one per kind: hypervolume of every trial that reported
    (a trial Pareto-ASHA stopped counts with its last report; it has no test accuracy), cost in dense epochs (the
    trials' training seconds over one dense epoch here, plus the dense training for a sweep forked from it)."""
    epoch_seconds = dense_epoch_seconds(data["dense"])
    out: dict = {}
    for sweep in data.get("sweeps", []):
        how = SWEEPS[sweep.get("kind", "random")]
        trials = sweep["finished"]
        volume = {acc: hypervolume_2d([[t[acc], t["macs_ratio"]] for t in trials if t[acc] is not None],
                                      [True, False], reference=[0.0, 1.0]) for acc in ("val_acc", "test_acc")}
        cost = sum(t["train_seconds"] for t in trials) / epoch_seconds
        dense = data["protocol"]["epochs"] if how.get("forked") else 0
        out.setdefault(how["row"], []).append({"seed": sweep["seed"], "hypervolume": volume["val_acc"],
                                               "test_hypervolume": volume["test_acc"], "members_cost": cost,
                                               "cost": cost + dense, "trials": sweep["trials"]})
    return {row: {**front_row(per_seed), "trials": [p["trials"] for p in per_seed]} for row, per_seed in out.items()}


def front_row(per_seed: list[dict]) -> dict:
    """A front row from its fronts per seed: each number's mean and 95% half-width."""
    numbers = ("hypervolume", "test_hypervolume", "members_cost", "cost")
    return {"seeds": [p["seed"] for p in per_seed], "per_seed": per_seed,
            **{k: interval([p[k] for p in per_seed]) for k in numbers}}


def summarise(runs: list[dict], dense: list[dict]) -> dict:
    """Per level: each row's mean test accuracy with its 95% half-width, MACs and params, and CHEX - row paired."""
    out: dict = {"dense": {"test_acc": interval([d["test_acc"] for d in dense]), "seeds": [d["seed"] for d in dense]}}
    for level in sorted({r["level"] for r in runs}, reverse=True):
        here = [r for r in runs if r["level"] == level]
        chex = {r["seed"]: r["test_acc"] for r in here if r["row"] == CHEX}
        rows = {}
        for name in [*ROWS, *FROM_TRAIN_JSON]:
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
    """``new``'s runs added to ``stored``'s (a run of the same row, level and seed replaces the stored one); the
    rest of ``stored`` (its sweeps, its dense models' timings) is kept."""
    if (stored["protocol"], stored["finetune"], stored["chex"]) != (new["protocol"], new["finetune"], new["chex"]):
        raise SystemExit("--merge: front.json was made with another protocol, fine-tune or CHEX settings")
    key = lambda run: (run["row"], run["level"], run["seed"])  # noqa: E731
    replaced = {key(run) for run in new["runs"]}
    dense = {d["seed"]: d for d in new["dense"] + stored["dense"]}  # the stored record of a seed (its first timing)
    return {**stored, **new, "argv": stored["argv"] + new["argv"], "minutes": stored["minutes"] + new["minutes"],
            "dense": [dense[s] for s in sorted(dense)],
            "runs": [r for r in stored["runs"] if key(r) not in replaced] + new["runs"]}


def targets(data: dict) -> list[list[str]]:
    """Issue 25's per-budget targets: the family member within 0.3 pt of CHEX from scratch by the mean, or above it;
    CHEX from the trained model above Torch-Pruning per-layer from the same model by the mean, and beyond the 95%
    interval at 12% and below. Paired by seed."""
    runs = data["runs"] + data.get("scratch", [])

    def paired(level: float, a: str, b: str):
        mine = {r["seed"]: r["test_acc"] for r in runs if r["row"] == a and r["level"] == level}
        theirs = {r["seed"]: r["test_acc"] for r in runs if r["row"] == b and r["level"] == level}
        seeds = sorted(set(mine) & set(theirs))
        return paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])[1:] if seeds else None

    out = []
    family = data["fronts"].get(FAMILY)
    # the "24-trial from-scratch sweep": every trial at full fidelity (Pareto-ASHA's stops are its own row)
    scratch_sweeps = [how["row"] for how in SWEEPS.values() if not how.get("forked") and not how.get("early_stop")]
    for name in (n for n in scratch_sweeps if family and n in data["fronts"]):
        sweep = data["fronts"][name]
        share = family["cost"][0] / sweep["cost"][0]
        reached = family["hypervolume"][0] >= statistics.median(p["hypervolume"] for p in sweep["per_seed"])
        out.append([f"family's front reaches the {sweep['trials'][0]}-trial {name}'s median hypervolume at ≤ 25% "
                    "of its cost, the dense training included",
                    f"hypervolume {family['hypervolume'][0]:.4f} vs {sweep['hypervolume'][0]:.4f} "
                    f"({len(sweep['per_seed'])} sweep(s)); cost {share:.0%} of the sweep's",
                    verdict(reached and share <= 0.25, "" if reached else "hypervolume not reached")])
    for level in sorted({r["level"] for r in data["runs"]}, reverse=True):
        family = paired(level, FAMILY, SCRATCH)
        if family is not None:
            diff, half = family
            out.append([f"family − CHEX from scratch at {level:.0%} (≥ −0.3 pt by the mean)",
                        f"{100 * diff:+.2f} ± {100 * (half or 0):.2f} pt",
                        verdict(diff >= -0.003, f"{100 * (-0.003 - diff):.2f} pt")])
    for level in sorted({r["level"] for r in data["runs"]}, reverse=True):
        tp = paired(level, CHEX, "torch-pruning per-layer from trained")
        if tp is None:
            continue
        diff, half = tp
        strict = level <= 0.12
        low = diff - (half or 0)
        ok = low > 0 if strict else diff > 0
        out.append([f"CHEX from trained − torch-pruning per-layer at {level:.0%}"
                    f"{' (beyond the interval)' if strict else ' (by the mean)'}",
                    f"{100 * diff:+.2f} ± {100 * (half or 0):.2f} pt",
                    verdict(ok, f"{100 * -low:.2f} pt (the interval's low end is {100 * low:+.2f})" if strict
                            else f"{100 * -diff:.2f} pt")])
    return out


def front_table(data: dict) -> list[str]:
    """Each front row's hypervolume and training cost (mean ± 95% half-width over seeds)."""
    def cell(value: list, digits: int = 4) -> str:
        return f"{value[0]:.{digits}f} ± {value[1] or 0:.{digits}f}"

    body = [[name, cell(row["hypervolume"]), cell(row["test_hypervolume"]), cell(row["cost"], 1),
             cell(row["members_cost"], 1), str(row["seeds"])] for name, row in data["fronts"].items()]
    return md_table(["row", "hypervolume (val_acc)", "hypervolume (test_acc)", "cost, dense epochs",
                     "cost given a trained model", "seeds"], body)


def draw_fronts(data: dict, path: Path) -> None:
    """Hypervolume (on validation and on test accuracy) against training cost, every front row on one figure:
    each seed a small dot, the mean a large one; hollow: the same front's cost for a user who already has the
    trained model."""
    plt = pyplot()
    fig, panels = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for axes, key, accuracy in zip(panels, ("hypervolume", "test_hypervolume"), ("val_acc", "test_acc")):
        for index, (name, row) in enumerate(data["fronts"].items()):
            color = f"C{index}"
            axes.scatter([p["cost"] for p in row["per_seed"]], [p[key] for p in row["per_seed"]], s=10,
                         color=color, alpha=0.5)
            axes.scatter([row["cost"][0]], [row[key][0]], s=70, color=color, label=name)
            if name not in FROM_TRAIN_JSON and not name.startswith("from-scratch sweep"):
                axes.scatter([row["members_cost"][0]], [row[key][0]], s=70, facecolors="none", edgecolors=color)
        axes.set_xlabel("training cost of the front (dense epochs; hollow: dense model already trained)")
        axes.set_ylabel(f"hypervolume ({accuracy} × MACs saved)")
    panels[0].legend(fontsize=8)
    fig.suptitle(f"One front over {len(data['levels'])} MACs budgets: resnet18 on Fashion-MNIST (CPU protocol)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(data: dict, notes_path: Path | None = None) -> str:
    dense_mean, dense_half = data["rows"]["dense"]["test_acc"]
    epoch = dense_epoch_seconds(data["dense"])
    lines = ["# From a trained model to a front: CHEX fine-tuned from it, the family, Torch-Pruning from it, and "
             "CHEX from scratch",
             "", f"Protocol: {yaml.safe_dump(data['protocol'], default_flow_style=True, width=200).strip()}; "
                 f"fine-tune: {data['finetune']}; machine: {data['machine']}; {data['minutes']:.0f} min.",
             f"One dense epoch here: {epoch:.1f} s ({data['protocol']['train_subset'] / epoch:.0f} training images/s, "
             "resnet18 dense, 2 threads; the median epoch of the dense models trained in this run).",
             *[f"Command: `{shlex.join(argv)}`" for argv in data["argv"]], "",
             f"Dense start (8 epochs): test {100 * dense_mean:.2f}% ± {100 * (dense_half or 0):.2f} "
             f"(seeds {data['rows']['dense']['seeds']}). "
             + "; ".join(f"*{ours}*: `benchmarks/train.json`'s row *{theirs}*"
                         for ours, theirs in FROM_TRAIN_JSON.items())
             + " (8 epochs from random weights; the same protocol, seeds and dense models: read, not run here). Test "
             "accuracy: mean ± 95% t-interval over seeds; *CHEX − row*: CHEX from trained minus the row, paired by "
             "seed.", "",
             "## The front: hypervolume against training cost", "",
             "Each row's members at every budget make one front per seed; its hypervolume of (accuracy, MACs / dense) "
             "against the reference (0, dense MACs), so 1.0 would be a perfect model at no cost. Cost in dense "
             "epochs: each member's (or sweep trial's) training seconds over the median dense epoch of the dense "
             f"models trained in this run, plus the dense training ({data['protocol']['epochs']} epochs) for a row "
             f"that starts from it; *{SCRATCH}*'s seconds over a dense epoch of its own machine (train.json's second "
             "machine ran no dense row: its dense epoch is scaled by both machines' time for CHEX at 25%). Training "
             "seconds only: evaluation, the test set and a sweep's start-up are not counted for any row.", "",
             *front_table(data), "", "![hypervolume against cost](front.png)", ""]
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
    lines += ["## Targets", "", *md_table(["target", "measured", "verdict"], targets(data)), ""]
    text = notes(notes_path) if notes_path is not None else None  # hand-written: design, what was tried
    return "\n".join(lines) + ("\n" + text if text else "\n")


def report(out: Path, data: dict) -> None:
    """front.json, front.md and front.png under ``out`` from ``data``'s runs."""
    data["argv"] = [recorded_argv(argv) for argv in data["argv"]]
    data["runs"] = [{k: v for k, v in run.items() if k != "path"} for run in data["runs"]]  # a scratch folder's
    data["levels"] = sorted({r["level"] for r in data["runs"]}, reverse=True)
    data["scratch"] = scratch_runs(data["levels"], [d["seed"] for d in data["dense"]])
    data["rows"] = summarise(data["runs"] + data["scratch"], data["dense"])
    data["fronts"] = fronts(data)
    write_report(out, "front", data, markdown(data, out / "front_notes.md"),
                 plot=("front.png", lambda path: draw_fronts(data, path)), echo=True)


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
    parser.add_argument("--sweep-trials", type=int, metavar="N",
                        help="instead of the rows: a sweep of N trials at this protocol (--sweep), added to "
                             "--out/front.json (with --seeds: one sweep per seed)")
    parser.add_argument("--sweep", choices=SWEEPS, default="random",
                        help="random, tpe, pareto-asha: the shipped space from scratch; forked: the shipped fine-tune "
                             "space, every trial forked from the seed's dense model (--cache: where it is kept)")
    parser.add_argument("--report-only", action="store_true",
                        help="recompute the rows of --out/front.json and rewrite front.md (no training)")
    args = parser.parse_args(argv)
    from chex_tune.config import FINETUNE

    if args.report_only:
        report(args.out, json.loads((args.out / "front.json").read_text()))
        return 0

    base, chex = dict(MODES["cpu"]), parse_settings(args.chex)
    if args.sweep_trials:
        data = json.loads((args.out / "front.json").read_text())
        if data["protocol"] != base:
            raise SystemExit("--sweep-trials: front.json was made with another protocol")
        for seed in args.seeds:
            data.setdefault("sweeps", []).append(run_sweep_row(args.sweep, base, args.sweep_trials, seed, args.cache))
            data["argv"].append(recorded_argv(sys.argv if argv is None else ["scripts/bench_front.py", *argv]))
        report(args.out, data)
        return 0
    finetune = {"epochs": FINETUNE["epochs"], "lr": FINETUNE["lr"],
                **{k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}}
    started, runs, dense = time.perf_counter(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            init, result = train_dense(base, seed, args.cache or Path(tmp))
            dense.append({"seed": seed, "test_acc": result["test_acc"], "train_seconds": result["train_seconds"],
                          "epoch_seconds": [h["epoch_seconds"] for h in result["history"]], "cached": result["cached"]})
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
    report(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
