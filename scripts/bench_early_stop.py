#!/usr/bin/env python
"""Early stopping benchmark: Pareto-ASHA against full-fidelity search, as hypervolume per trial-epoch.

A real sweep on a 2-core CPU is too slow to compare schedulers over many repeats, so the field's standard
method is used: a **curve bank**.

1. ``bank``: real per-epoch curves (val_acc, macs, params, sparsity) of ``--configs`` CHEX configurations
   drawn at random from the shipped space, trained with chex-tune's own loop (``chex_tune.train``) in the
   reduced CPU setting ``BANK_SETTINGS``; stored with their exact settings and the space they were drawn
   from (a recorded bank keeps its space when the shipped bounds move) in ``benchmarks/curve_bank.json``
   with the rank correlation (Kendall tau) of each epoch's val_acc (and MACs) with the final ones.
2. ``replay``: sweeps through the real code (Ray Tune, ``OptunaSearch`` wrapped in chex-tune's
   ``ObjectiveGuard``, the ``ParetoAsha`` scheduler) with a trainable that reads the bank: a proposed
   configuration trains as the bank's nearest configuration (1-NN in the space's normalised coordinates)
   and reports its curve epoch by epoch, sleeping a scaled copy of the recorded epoch time so trials
   reach rungs in a realistic order. Full-fidelity random and TPE against Pareto-ASHA with random and
   TPE, ``--repeats`` each, all with the same budget of trial-epochs. Hypervolume under a fixed reference
   (val_acc 0, the dense model's MACs), as a fraction of the dense MACs x 1.0 box.
3. ``real``: the same setting as the bank, one real sweep with ``early_stop`` next to one without (same
   seed, same trials), to check that the replay's saving is what a real sweep saves.

Writes ``early_stop.json``, ``early_stop.md`` and ``early_stop.png`` under ``--out``.

    python scripts/bench_early_stop.py                 # all phases (the bank is reused when present)
    python scripts/bench_early_stop.py --phase replay  # replays only, from benchmarks/curve_bank.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import chex_tune  # noqa: F401  (before timm)

# isort: split
import numpy as np
import torch

from chex_tune.tuning.pareto import hypervolume_2d
from chex_tune.tuning.pareto_asha import DEFAULT_ETA, DEFAULT_GRACE, ParetoAsha
from chex_tune.tuning.space import SearchSpace

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import cpu_line, log, machine_info, md_table, notes, pyplot, recorded_argv, verdict, write_report  # noqa: E402

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "fashion_mnist_resnet18.yaml"
BANK_SETTINGS = {"epochs": 9, "train_subset": 1500, "val_size": 1000}  # rungs 1 and 3 below 9 epochs (eta 3)
OBJECTIVES = "val_acc:max,macs:min"
METHODS = {  # name -> (sampler, early stopping)
    "random, full fidelity": ("random", False),
    "TPE, full fidelity": ("tpe", False),
    "Pareto-ASHA + random": ("random", True),
    "Pareto-ASHA + TPE": ("tpe", True),
}
FULL_TRIALS = 24  # a full-fidelity sweep; every method gets its budget of trial-epochs
TARGETS = {"epochs_fraction": 0.5, "final_gap": 0.01, "real_vs_replay": 0.2}
VARIANTS = [{"grace": g, "eta": e, "cost": c} for g, e, c in
            ((1, 3, "reported"), (1, 3, "budget"), (2, 3, "budget"), (3, 3, "budget"), (1, 2, "budget"),
             (1, 4, "budget"), (2, 2, "budget"), (2, 4, "budget"), (2, 5, "budget"))]
# Foresight: every epoch reports the trial's *final* val_acc, so a rung ranks trials as they will end. No real
# rule can know this; it bounds what any rung rule could save on this bank with this budget and these rungs.
VARIANTS += [{"grace": g, "eta": 3, "cost": "budget", "foresight": True} for g in (1, 2)]
# Budget peers: a rung ranks a trial only among the trials whose budget is within this factor of its own, so
# stopping cannot thin out the budgets a front needs, and accuracy decides only between like budgets.
VARIANTS += [{"grace": 2, "eta": 3, "cost": "budget", "peers": f} for f in (1.5, 1.25)]


# ------------------------------------------------------------------------------------ 1. the bank
def bank_space(path: Path) -> SearchSpace:
    """The space the bank at ``path`` was drawn from (recorded in it), or the shipped space for a new bank.

    A bank's configurations, their replays' nearest-neighbour lookup and the real sweeps beside them all
    belong to one space; recording it keeps a bank usable after the shipped space's bounds move."""
    recorded = json.loads(path.read_text()).get("search_space") if path.exists() else None
    return SearchSpace.from_dict(recorded, source=f"{path}: search_space") if recorded else SearchSpace.load(SPACE)


def sample_configs(space: SearchSpace, count: int, seed: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    distributions = space.optuna_distributions()
    return [study.ask(distributions).params for _ in range(count)]


def record_bank(space: SearchSpace, path: Path, count: int, seed: int, train_seed: int | None = None) -> dict:
    """Train every configuration (resuming a partly written bank) and store its curve.

    The configurations are drawn with ``seed``; each trains with ``train_seed`` (default: ``seed``), so a
    second bank of the same configurations under another training seed measures run-to-run noise."""
    from chex_tune.train.loop import train

    train_seed = seed if train_seed is None else train_seed
    bank = json.loads(path.read_text()) if path.exists() else {}
    configs = sample_configs(space, count, seed)
    if bank.get("configs") and ([e["config"] for e in bank["entries"]] != configs[:len(bank["entries"])]
                                or bank.get("train_seed", bank["seed"]) != train_seed):
        raise SystemExit(f"{path} holds other configurations or another training seed; move it away to record a "
                         "new bank")
    bank.update(space=str(SPACE.name), search_space=space.to_dict(), settings={**space.fixed, **BANK_SETTINGS},
                seed=seed, train_seed=train_seed, configs=count, objectives=OBJECTIVES, machine=machine_info())
    bank.setdefault("entries", [])
    started = time.perf_counter()
    for index in range(len(bank["entries"]), count):
        config = configs[index]
        curve: list[dict] = []

        def keep(metrics: dict, curve: list[dict] = curve) -> None:
            curve.append({k: metrics[k] for k in ("epoch", "val_acc", "macs", "params", "sparsity", "epoch_seconds")})

        run = space.run_config(config, **BANK_SETTINGS, seed=train_seed, device="cpu")
        with tempfile.TemporaryDirectory() as out:
            result = train(run, out, callback=keep)
        final = {k: getattr(result, k) for k in ("val_acc", "test_acc", "macs", "params", "dense_macs",
                                                   "train_seconds")}
        bank["entries"].append({"config": config, "curve": curve, "final": final})
        path.write_text(json.dumps(bank, indent=1))  # after every configuration: an interrupted record resumes
        done = index + 1
        log(f"bank {done}/{count}: {config} -> val_acc {final['val_acc']:.4f}, MACs {final['macs'] / 1e6:.2f}M "
            f"({final['train_seconds']:.0f} s; {(time.perf_counter() - started) / 60:.1f} min)")
    bank["correlation"] = rank_correlation(bank["entries"])
    path.write_text(json.dumps(bank, indent=1))
    return bank


def rank_correlation(entries: list[dict]) -> list[dict]:
    """Kendall tau between each epoch's value and the final one, for val_acc and MACs."""
    from scipy.stats import kendalltau

    epochs = min(len(e["curve"]) for e in entries)
    out = []
    for epoch in range(epochs):
        row = {"epoch": epoch + 1}
        for metric in ("val_acc", "macs"):
            tau = kendalltau([e["curve"][epoch][metric] for e in entries], [e["final"][metric] for e in entries])
            row[metric] = float(tau.statistic)
        out.append(row)
    return out


def beyond_budget(entries: list[dict]) -> dict:
    """What could tell a rung more than the MACs budget it already reads exactly: Kendall tau with the part of
    the final val_acc that the budget does not explain (the residual of a quadratic fit on ``macs_target``),
    for each epoch's val_acc (its own budget fit removed too) and for each other searched number."""
    from scipy.stats import kendalltau

    def residual(values: list[float]) -> np.ndarray:
        values = np.array(values, dtype=float)
        return values - np.polyval(np.polyfit(budgets, values, 2), budgets)

    budgets = np.array([e["config"]["macs_target"] for e in entries])
    finals = [e["final"]["val_acc"] for e in entries]
    final = residual(finals)
    epochs = min(len(e["curve"]) for e in entries)
    per_epoch = [float(kendalltau(residual([e["curve"][k]["val_acc"] for e in entries]), final).statistic)
                 for k in range(epochs - 1)]
    numbers = sorted(name for name, value in entries[0]["config"].items()
                     if name != "macs_target" and isinstance(value, (int, float)) and not isinstance(value, bool))
    params = {name: float(kendalltau([e["config"][name] for e in entries], final).statistic) for name in numbers}
    return {"tau_budget_final": float(kendalltau(budgets, finals).statistic),
            "tau_epoch_residual": per_epoch, "tau_param_residual": params,
            "residual_sd": float(final.std()), "final_sd": float(np.std(finals))}


def replicate_agreement(bank: dict, replicate: dict) -> dict:
    """How much of the configurations' final val_acc is theirs and how much is the run's luck: the same
    configurations trained again under another seed. Kendall tau of each epoch's val_acc in the bank with
    the replicate's final val_acc (what an early rung can know of a fresh run's result), and Pearson r of
    the two final val_accs (r is the share of the spread between configurations that repeats)."""
    from scipy.stats import kendalltau, pearsonr

    entries = bank["entries"][:len(replicate["entries"])]
    again = [e["final"]["val_acc"] for e in replicate["entries"]]
    epochs = min(len(e["curve"]) for e in entries)
    per_epoch = [float(kendalltau([e["curve"][k]["val_acc"] for e in entries], again).statistic)
                 for k in range(epochs)]
    finals = [e["final"]["val_acc"] for e in entries]
    return {"configs": len(entries), "train_seeds": [bank.get("train_seed", bank["seed"]), replicate["train_seed"]],
            "tau_epoch_vs_replicate_final": per_epoch,
            "pearson_final": float(pearsonr(finals, again).statistic),
            "spread_final": [float(np.std(finals)), float(np.std(again))],
            "mean_abs_change": float(np.mean(np.abs(np.subtract(finals, again))))}


# ------------------------------------------------------------------------------------ 2. the replay
class Bank:
    """The recorded configurations as points of the space's unit cube, for nearest-neighbour lookup."""

    def __init__(self, bank: dict, space: SearchSpace):
        self.entries = bank["entries"]
        self.params = space.params
        self.points = np.array([self.coordinates(e["config"]) for e in self.entries])

    def coordinates(self, config: dict) -> list[float]:
        out = []
        for name, param in sorted(self.params.items()):
            value = config[name]
            if param.choices is not None:
                out.append(float(param.choices.index(value)) * 10.0)  # another choice is never "near"
            else:
                low, high = float(param.low), float(param.high)
                if param.log:
                    value, low, high = math.log(value), math.log(low), math.log(high)
                out.append((float(value) - low) / (high - low))
        return out

    def nearest(self, config: dict) -> dict:
        distances = ((self.points - np.array(self.coordinates(config))) ** 2).sum(axis=1)
        return self.entries[int(np.argmin(distances))]


def replay_trainable(config: dict, bank: Bank, seconds_per_second: float, foresight: bool = False) -> None:
    from ray import tune

    from chex_tune.tuning.protocol import FINAL_KEY

    entry = bank.nearest(config)
    budget = entry["config"]["macs_target"] * entry["final"]["dense_macs"]  # what the loop reports as macs_budget
    for point in entry["curve"]:
        time.sleep(point["epoch_seconds"] * seconds_per_second)
        tune.report({**{k: point[k] for k in ("epoch", "val_acc", "macs", "params", "sparsity")},
                     "macs_budget": budget, **({"val_acc": entry["final"]["val_acc"]} if foresight else {})})
    tune.report({**entry["final"], "epoch": len(entry["curve"]), FINAL_KEY: True})


class BudgetPeers(ParetoAsha):
    """Pareto-ASHA whose rung holds a trial only against the trials of a budget within ``factor`` of its own."""

    def __init__(self, *args, factor: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.factor = factor
        self.cost = next(n for n, o in enumerate(self.objectives) if o.name == "macs")

    def rivals(self, milestone: int, trial_id: str) -> list[str]:
        rung = self.rungs[milestone]
        mine = rung[trial_id][self.cost]
        return [i for i, v in rung.items() if max(v[self.cost], mine) <= self.factor * min(v[self.cost], mine)]


def replay_sweep(bank: Bank, space: SearchSpace, sampler: str, early_stop: bool, *, trials: int, seed: int,
                 concurrent: int, epochs: int, seconds_per_second: float, storage: Path, rule: dict) -> list[dict]:
    """One sweep; returns its events in order: {"kind": "epoch"|"final", "trial", ...}."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from chex_tune.tuning.objectives import parse_objectives
    from chex_tune.tuning.searcher import ObjectiveGuard, make_sampler

    objectives = parse_objectives(OBJECTIVES)
    kind = partial(BudgetPeers, factor=rule["peers"]) if rule.get("peers") else ParetoAsha
    scheduler = kind(objectives, grace=rule["grace"], eta=rule["eta"], max_t=epochs,
                     rung_metrics={"macs": "macs_budget"} if rule["cost"] == "budget" else None) \
        if early_stop else None
    searcher = OptunaSearch(space=space.optuna_distributions(), metric=[o.name for o in objectives],
                            mode=[o.mode for o in objectives],
                            sampler=make_sampler(sampler, seed=seed, trials=FULL_TRIALS, concurrent=concurrent))
    events: list[dict] = []

    class Recorder(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not result.get("chex_final"):
                events.append({"kind": "epoch", "trial": trial.trial_id})

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if last.get("chex_final") and (scheduler is None or scheduler.stopped_at(trial.trial_id) is None):
                events.append({"kind": "final", "trial": trial.trial_id, "val_acc": last["val_acc"],
                               "test_acc": last.get("test_acc"), "macs": last["macs"]})

    trainable = tune.with_resources(tune.with_parameters(replay_trainable, bank=bank,
                                                         seconds_per_second=seconds_per_second,
                                                         foresight=rule.get("foresight", False)), {"cpu": 0.5})
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=ObjectiveGuard(searcher, objectives, early_stop=scheduler), scheduler=scheduler,
        num_samples=trials, max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0, callbacks=[Recorder()]))
    tuner.fit()
    return events


def hypervolume_curve(events: list[dict], dense_macs: float, grid: np.ndarray, accuracy: str = "val_acc") -> np.ndarray:
    """Hypervolume of the finished trials after each trial-epoch spent, on ``grid`` (cumulative trial-epochs);
    ``accuracy``: the finished trials' val_acc (what the sweep decided on) or test_acc (held out from it)."""
    spent, points, steps, volumes = 0, [], [0], [0.0]
    for event in events:
        if event["kind"] == "epoch":
            spent += 1
        else:
            points.append([event[accuracy], event["macs"] / dense_macs])
            steps.append(spent)
            volumes.append(hypervolume_2d(points, [True, False], reference=[0.0, 1.0]))
    index = np.searchsorted(np.array(steps), grid, side="right") - 1
    return np.array(volumes)[index]


def quartiles(curves: list[np.ndarray]) -> dict:
    """Median and quartiles of several sweeps' hypervolume curves, and each sweep's final value."""
    curves = np.array(curves)
    return {"median": np.median(curves, axis=0).tolist(), "q25": np.quantile(curves, 0.25, axis=0).tolist(),
            "q75": np.quantile(curves, 0.75, axis=0).tolist(), "final": curves[:, -1].tolist()}


def epochs_of_first(events: list[dict], trials: int) -> int:
    """Trial-epochs the first ``trials`` trials (in start order) spent."""
    order: list[str] = []
    counts: dict[str, int] = {}
    for event in events:
        if event["kind"] == "epoch":
            if event["trial"] not in counts:
                order.append(event["trial"])
            counts[event["trial"]] = counts.get(event["trial"], 0) + 1
    return sum(counts[t] for t in order[:trials])


def run_replays(bank_data: dict, space: SearchSpace, repeats: int, concurrent: int, scale: float, rule: dict,
                methods=tuple(METHODS)) -> dict:
    import ray

    bank = Bank(bank_data, space)
    epochs = len(bank.entries[0]["curve"])
    budget = FULL_TRIALS * epochs
    dense_macs = bank.entries[0]["final"]["dense_macs"]
    grid = np.arange(budget + 1)
    per_method: dict[str, dict] = {}
    ray.init(num_cpus=concurrent, include_dashboard=False, log_to_driver=False, configure_logging=True,
             logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as storage:
            for name in methods:
                sampler, early = METHODS[name]
                # an early-stopping sweep runs more trials within the same budget (each costs ~2.3 of 9 epochs)
                trials = FULL_TRIALS * (4 if early else 1)
                curves, tests, used, first = [], [], [], []
                started = time.perf_counter()
                for repeat in range(repeats):
                    events = replay_sweep(bank, space, sampler, early, trials=trials, seed=repeat,
                                          concurrent=concurrent, epochs=epochs, seconds_per_second=scale,
                                          storage=Path(storage), rule=rule)
                    curves.append(hypervolume_curve(events, dense_macs, grid))
                    if all(e.get("test_acc") is not None for e in events if e["kind"] == "final"):
                        tests.append(hypervolume_curve(events, dense_macs, grid, accuracy="test_acc"))
                    used.append(sum(e["kind"] == "epoch" for e in events))
                    first.append(epochs_of_first(events, FULL_TRIALS // 2))
                per_method[name] = {"trials": trials, **quartiles(curves), "epochs_used": used,
                                    "epochs_first_half": first}
                if len(tests) == repeats:  # a bank recorded with test accuracy
                    per_method[name]["test"] = quartiles(tests)
                log(f"replay {name}: {repeats} sweeps in {time.perf_counter() - started:.0f} s; median final "
                    f"hypervolume {per_method[name]['median'][-1]:.4f}; trial-epochs used "
                    f"{statistics.median(used):.0f}")
    finally:
        ray.shutdown()
    return {"budget": budget, "epochs": epochs, "repeats": repeats, "concurrent": concurrent, "scale": scale,
            "dense_macs": dense_macs, "rule": rule, "methods": per_method}


# ------------------------------------------------------------------------------------ 3. the real sweeps
def run_real(space: SearchSpace, trials: int, concurrent: int, seed: int) -> dict:
    from chex_tune.tuning.sweep import SweepOptions, run_sweep

    settings = {**space.to_dict()}
    settings["fixed"] = {**settings["fixed"], **BANK_SETTINGS}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "early_stop_real.yaml"
        import yaml

        source.write_text(yaml.safe_dump(settings))
        real_space = SearchSpace.load(source)
        for early in (False, True):
            started = time.perf_counter()
            result = run_sweep(real_space, SweepOptions(
                trials=trials, concurrent=concurrent, optuna_sampler="tpe", seed=seed, store=str(Path(tmp) / "store"),
                experiment=f"early-stop-{early}", early_stop=early), log=log)
            wall = time.perf_counter() - started
            epochs = sum(int(row.metrics.get("epochs", 0)) if row.stopped_at is None else row.stopped_at
                         for row in result.rows)  # a finished trial logs its epochs; a stopped one is tagged
            finished = [row for row in result.rows if row.finished]
            dense = finished[0].metrics["dense_macs"] if finished else 1.0
            volume = hypervolume_2d([[r.metrics["val_acc"], r.metrics["macs"] / dense] for r in finished],
                                    [True, False], reference=[0.0, 1.0])
            out["early_stop" if early else "full"] = {
                "wall_seconds": wall, "trial_epochs": epochs, "finished": len(finished),
                "stopped": len(result.stopped), "hypervolume": volume,
                "stopped_at": [row["stopped_at"] for row in result.stopped]}
            log(f"real sweep {'with' if early else 'without'} early stopping: {epochs} trial-epochs, "
                f"{len(result.stopped)} stopped, hypervolume {volume:.4f}, {wall:.0f} s")
    return {"trials": trials, "concurrent": concurrent, "seed": seed, **out}


# ------------------------------------------------------------------------------------ the report
def epochs_to_reach(curve: list[float], level: float) -> int | None:
    hits = [i for i, v in enumerate(curve) if v >= level - 1e-12]
    return hits[0] if hits else None


def standing(median: list[float], reference: float, twin: list[float], budget: int) -> dict:
    """A method's median hypervolume curve against full-fidelity random's final value (``reference``) and
    against its full-fidelity twin's curve."""
    reach = epochs_to_reach(median, reference)
    return {"median_final": median[-1], "reach_random_final": reach,
            "reach_fraction": None if reach is None else reach / budget,
            "gap_to_full": (twin[-1] - median[-1]) / twin[-1]}


def saving_first_half(method: dict, epochs: int) -> float:
    """The share of trial-epochs a method saved on the first half of a full-fidelity sweep's trials (median)."""
    return 1 - statistics.median(method["epochs_first_half"]) / (FULL_TRIALS // 2 * epochs)


def twin_of(name: str) -> str:
    return "TPE, full fidelity" if "TPE" in name else "random, full fidelity"


def summarise(data: dict) -> dict:
    replay = data["replay"]
    methods, budget = replay["methods"], replay["budget"]
    reference = methods["random, full fidelity"]["median"][-1]
    summary = {}
    for name, method in methods.items():
        summary[name] = {**standing(method["median"], reference, methods[twin_of(name)]["median"], budget),
                         "saving_first_half": saving_first_half(method, replay["epochs"])}
    asha = summary["Pareto-ASHA + random"]
    gap = max(summary["Pareto-ASHA + random"]["gap_to_full"], summary["Pareto-ASHA + TPE"]["gap_to_full"])
    targets = {
        "epochs_fraction": (asha["reach_fraction"] is not None
                            and asha["reach_fraction"] <= TARGETS["epochs_fraction"], asha["reach_fraction"]),
        "final_gap": (gap <= TARGETS["final_gap"], gap),
    }
    if all("test" in method for method in methods.values()):
        # The same sweeps scored on test accuracy: the decisions used val_acc only, so a full-fidelity sweep's
        # pick of the luckiest val_acc among more finished trials does not count here (see the replicate).
        test_reference = methods["random, full fidelity"]["test"]["median"][-1]
        for name, method in methods.items():
            summary[name]["test"] = standing(method["test"]["median"], test_reference,
                                             methods[twin_of(name)]["test"]["median"], budget)
        test = summary["Pareto-ASHA + random"]["test"]
        targets["epochs_fraction_test"] = (test["reach_fraction"] is not None and
                                           test["reach_fraction"] <= TARGETS["epochs_fraction"], test["reach_fraction"])
    real = data.get("real")
    if real:
        saving_real = 1 - real["early_stop"]["trial_epochs"] / real["full"]["trial_epochs"]
        saving_replay = summary["Pareto-ASHA + TPE"]["saving_first_half"] if real["trials"] == FULL_TRIALS // 2 \
            else math.nan
        relative = abs(saving_real - saving_replay) / saving_replay if saving_replay else math.nan
        targets["real_vs_replay"] = (relative <= TARGETS["real_vs_replay"], relative)
        summary["real"] = {"saving_real": saving_real, "saving_replay": saving_replay}
    return {"methods": summary, "targets": targets}


def plot(data: dict, path: Path) -> None:
    plt = pyplot()
    replay = data["replay"]
    methods = replay["methods"]
    grid = np.arange(replay["budget"] + 1)
    start = replay["budget"] // 4
    # the whole budget; then from a quarter on (zoomed), where the methods differ by tenths of a percent; and
    # the same sweeps scored on test accuracy when the bank has it
    panels = [("val_acc: the whole budget", lambda m: m, 0),
              (f"val_acc: from {start} trial-epochs on (zoomed)", lambda m: m, start)]
    if all("test" in m for m in methods.values()):
        panels.append((f"test_acc: from {start} trial-epochs on (zoomed)", lambda m: m["test"], start))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8))
    for ax, (title, view, first) in zip(axes, panels):
        for name, method in methods.items():
            curve = view(method)
            line, = ax.plot(grid[first:], curve["median"][first:], label=f"{name} ({method['trials']} trials)")
            ax.fill_between(grid[first:], curve["q25"][first:], curve["q75"][first:], color=line.get_color(),
                            alpha=0.15)
        ax.set_xlabel("cumulative trial-epochs")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if first:
            reference = view(methods["random, full fidelity"])["median"][-1]
            ax.axhline(reference, color="grey", linestyle=":", linewidth=1, label="random's final median")
            ax.axvline(replay["budget"] / 2, color="grey", linestyle="--", linewidth=1, label="half the budget")
            low = min(min(view(m)["median"][start:]) for m in methods.values())
            ax.set_ylim(low - 0.002, max(view(m)["median"][-1] for m in methods.values()) + 0.004)
    axes[0].set_ylabel("hypervolume (accuracy x MACs saved; reference 0, dense)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Replayed sweeps from the curve bank: median and quartiles of {replay['repeats']} repeats")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reach_text(reach: int | None, fraction: float | None = None) -> str:
    if reach is None:
        return "never"
    return str(reach) if fraction is None else f"{reach} ({fraction:.0%})"


def epoch_table(taus: dict[str, list[float]], extra: dict[str, float] | None = None) -> list[str]:
    """A table of Kendall taus by epoch (1, 2, ...), a line per measure; ``extra``: more columns, by name, after
    the epochs."""
    extra = extra or {}
    epochs = len(next(iter(taus.values())))
    return md_table(["epoch", *(str(k + 1) for k in range(epochs)), *extra],
                    ([label, *(f"{t:.2f}" for t in values), *(f"{t:.2f}" for t in extra.values())]
                     for label, values in taus.items()))


def bank_section(data: dict, bank: dict) -> list[str]:
    """Title, machine, and the curve bank: where its configurations come from, how their ranks settle."""
    settings = ", ".join(f"{k}={v}" for k, v in bank["settings"].items())
    searched = ", ".join(f"{name} {spec['choices']}" if "choices" in spec else
                         f"{name} {spec['low']}-{spec['high']}{' (log)' if spec.get('log') else ''}"
                         for name, spec in bank["search_space"]["search"].items())
    then = "" if bank["search_space"] == SearchSpace.load(SPACE).to_dict() else " as it was then"
    correlation = bank["correlation"]
    return ["# Early stopping: Pareto-ASHA against full-fidelity search", "",
            f"{cpu_line(data['machine'])}. Reproduce: `python scripts/bench_early_stop.py "
            "--variants` (every phase; a bank already recorded is reused: `--phase bank|replay|real|report`).", "",
            f"**Curve bank** (`curve_bank.json`): {len(bank['entries'])} CHEX configurations drawn at random "
            f"(seed {bank['seed']}) from `search_spaces/{bank['space']}`{then} ({searched}), each "
            f"trained with {settings}. "
            "Rank correlation (Kendall tau) of each epoch's value with the final one:", "",
            *epoch_table({"val_acc": [r["val_acc"] for r in correlation], "MACs": [r["macs"] for r in correlation]}),
            ""]


def replicate_section(agreement: dict) -> list[str]:
    """The same configurations trained again under another seed: how much of a final val_acc repeats."""
    seeds = agreement["train_seeds"]
    return [f"**Replicate** (`curve_bank_replicate.json`): the first {agreement['configs']} configurations "
            f"trained again with training seed {seeds[1]} (the bank: {seeds[0]}), same data. Kendall tau of the "
            "bank's val_acc at each epoch with the replicate's final val_acc:", "",
            *epoch_table({"val_acc": agreement["tau_epoch_vs_replicate_final"]}), "",
            f"The two final val_accs of a configuration: Pearson r {agreement['pearson_final']:.2f}, mean "
            f"absolute change {100 * agreement['mean_abs_change']:.2f} pt, against a spread between "
            f"configurations of {100 * agreement['spread_final'][0]:.2f} / {100 * agreement['spread_final'][1]:.2f}"
            " pt (standard deviation).", ""]


def beyond_section(bank: dict) -> list[str]:
    """What could rank trials beyond their MACs budget (see ``beyond_budget``)."""
    beyond = beyond_budget(bank["entries"])
    return [f"**Beyond the budget**: the MACs budget ranks the final val_acc at Kendall tau "
            f"{beyond['tau_budget_final']:.2f}; the rest of it (the residual of a quadratic fit on the budget, "
            f"{100 * beyond['residual_sd']:.2f} pt of {100 * beyond['final_sd']:.2f} pt standard deviation) ranks "
            "with each epoch's val_acc (its budget fit removed too) and each other searched number at:", "",
            *epoch_table({"tau": beyond["tau_epoch_residual"]}, beyond["tau_param_residual"]), ""]


def replay_section(data: dict) -> list[str]:
    """The replayed sweeps: each method's hypervolume against its budget, on val_acc and (if recorded) test."""
    replay, summary = data["replay"], data["summary"]
    rule = replay["rule"]
    out = [f"**Replays**: {replay['repeats']} sweeps per method through Ray Tune with chex-tune's `ObjectiveGuard`"
           f"(OptunaSearch) and `ParetoAsha` (grace {rule['grace']}, eta {rule['eta']}, MACs at a "
           f"rung read from the trial's {'MACs budget' if rule['cost'] == 'budget' else 'masked model'}; "
           f"{replay['epochs']} epochs), "
           f"{replay['concurrent']} trials at a time, a budget of {replay['budget']} trial-epochs "
           f"({FULL_TRIALS} full trials). Hypervolume of the finished trials under the reference (val_acc 0, "
           "dense MACs), MACs as a fraction of dense: 1.0 would be a perfect model at no cost.", "",
           *md_table(["method", "trials", "median final hypervolume", "trial-epochs to reach random's final",
                      "gap to its full-fidelity twin", "epochs saved on the first 12 trials"],
                     ([name, str(method["trials"]), f"{s['median_final']:.4f}",
                       reach_text(s["reach_random_final"], s["reach_fraction"]), f"{s['gap_to_full']:+.2%}",
                       f"{s['saving_first_half']:.0%}"]
                      for name, method in replay["methods"].items() for s in [summary["methods"][name]]))]
    if "test" in summary["methods"]["random, full fidelity"]:
        out += ["", "**The same sweeps scored on test accuracy** (10,000 held-out images; every decision above used "
                "val_acc only): the hypervolume of the finished trials' test accuracy and MACs.", "",
                *md_table(["method", "median final test hypervolume", "trial-epochs to reach random's final",
                           "gap to its full-fidelity twin"],
                          ([name, f"{s['median_final']:.4f}", reach_text(s["reach_random_final"], s["reach_fraction"]),
                            f"{s['gap_to_full']:+.2%}"]
                           for name in replay["methods"] for s in [summary["methods"][name]["test"]]))]
    return out + ["", "![hypervolume against trial-epochs](early_stop.png)", ""]


def variant_cells(v: dict, tested: bool) -> list[str]:
    r = v["rule"]
    rung = ("budget" if r["cost"] == "budget" else "masked model") + (
        ", **foresight** (final val_acc)" if r.get("foresight") else "") + (
        f", ranked only among budgets within {r['peers']:g}x" if r.get("peers") else "")
    cells = [str(r["grace"]), str(r["eta"]), rung, f"{v['median_final']:.4f}", reach_text(v["reach_random_final"]),
             f"{v['saving_first_half']:.0%}"]
    if tested:
        cells += [f"{v['median_final_test']:.4f}", reach_text(v["reach_random_final_test"])]
    return cells


def variants_section(data: dict) -> list[str]:
    """Pareto-ASHA + random under other rules (grace, eta, what a rung reads)."""
    tested = all("median_final_test" in v for v in data["variants"])
    out = ["**Rules compared** (Pareto-ASHA + random, the same repeats; what the defaults rest on):", "",
           *md_table(["grace", "eta", "a rung reads", "median final hypervolume",
                      "trial-epochs to reach random's final", "epochs saved on the first 12 trials",
                      *(["on test: median final", "on test: to reach random's"] if tested else [])],
                     (variant_cells(v, tested) for v in data["variants"]))]
    here = data["machine"]["cpu_model"]
    elsewhere = sorted({v["machine"] for v in data["variants"] if v.get("machine", here) != here})
    if elsewhere:  # a report that replayed only some rules (``--phase report --variants``)
        out += ["", f"Some rules were replayed on another machine ({', '.join(elsewhere)}): replays read "
                    "recorded curves, so only Ray's timing (which trials share a rung) differs."]
    return out + [""]


def real_section(data: dict) -> list[str]:
    """The real sweeps with and without early stopping, and their saving against the replay's."""
    real = data["real"]
    s = data["summary"]["methods"]["real"]
    return [f"**Real sweeps** (the bank's setting, {real['trials']} trials, {real['concurrent']} at a time, TPE, "
            f"seed {real['seed']}):", "",
            *md_table(["sweep", "trial-epochs", "finished", "stopped", "hypervolume", "wall time"],
                      ([title, str(r["trial_epochs"]), str(r["finished"]), str(r["stopped"]),
                        f"{r['hypervolume']:.4f}", f"{r['wall_seconds']:.0f} s"]
                       for key, title in (("full", "without early stopping"), ("early_stop", "with --early-stop"))
                       for r in [real[key]])),
            "", f"Saving in trial-epochs: real {s['saving_real']:.0%}, replay (Pareto-ASHA + TPE, first "
                f"{real['trials']} trials, median) {s['saving_replay']:.0%}.", ""]


TARGET_TEXTS = {
    "epochs_fraction": "Pareto-ASHA + random reaches the final median hypervolume of full-fidelity random "
                       "with <= 50% of its trial-epochs",
    "final_gap": "Pareto-ASHA's final median hypervolume within 1% of its full-fidelity twin",
    "real_vs_replay": "the real sweep's saving within 20% (relative) of the replay's",
    "epochs_fraction_test": "the same, scored on test accuracy: Pareto-ASHA + random reaches full-fidelity "
                            "random's final median test hypervolume with <= 50% of its trial-epochs"}


def missed_reach(replay: dict, key: str, value: float | None) -> str:
    """A missed trial-epochs target: when (if ever) Pareto-ASHA + random reached the mark, and how far short
    it is at half the budget."""
    half = replay["budget"] // 2
    view = (lambda m: m["test"]) if key.endswith("_test") else (lambda m: m)
    asha = view(replay["methods"]["Pareto-ASHA + random"])["median"]
    reference = view(replay["methods"]["random, full fidelity"])["median"][-1]
    reached = (f"never reached within the whole budget ({replay['budget']} trial-epochs)" if value is None
               else f"reached with {value:.0%} of them, missed by "
                    f"{100 * (value - TARGETS['epochs_fraction']):.0f} points")
    return (f"- MISS: {TARGET_TEXTS[key]}: {reached}; at half the budget its median hypervolume is "
            f"{asha[half]:.4f}, {reference - asha[half]:.4f} ({(reference - asha[half]) / reference:.1%}) "
            f"short of random's final {reference:.4f}")


def targets_section(data: dict) -> list[str]:
    out = ["## Targets", ""]
    for key, (ok, value) in data["summary"]["targets"].items():
        shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"
        if key in ("epochs_fraction", "epochs_fraction_test") and not ok:
            out.append(missed_reach(data["replay"], key, value))
        else:
            out.append(f"- {verdict(ok, shown if not ok else '')}: {TARGET_TEXTS[key]} (measured {shown})")
    return out


def markdown(data: dict, bank: dict, notes_path: Path) -> str:
    """early_stop.md: the bank, the replays, the rules compared, the real sweeps, the targets, then the notes."""
    out = bank_section(data, bank)
    if data.get("replicate"):
        out += replicate_section(data["replicate"])
    out += beyond_section(bank) + replay_section(data)
    if data.get("variants"):
        out += variants_section(data)
    if data.get("real"):
        out += real_section(data)
    out += targets_section(data)
    text = notes(notes_path)
    if text is not None:
        out += ["", text.strip()]
    return "\n".join(out) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("all", "bank", "replicate", "replay", "real", "report"), default="all",
                        help="report: rewrite the .md and .png from early_stop.json")
    parser.add_argument("--configs", type=int, default=144)  # more than the 96 trials an early-stopping sweep proposes
    parser.add_argument("--replicate", type=int, default=48,
                        help="train the bank's first N configurations again under another seed (run-to-run noise)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--scale", type=float, default=0.004, help="replay seconds per recorded second")
    parser.add_argument("--real-trials", type=int, default=FULL_TRIALS // 2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grace", type=int, default=DEFAULT_GRACE)
    parser.add_argument("--eta", type=int, default=DEFAULT_ETA)
    parser.add_argument("--rung-cost", choices=("budget", "reported"), default="budget",
                        help="the MACs a rung ranks on: the trial's MACs budget, or the masked model's MACs")
    parser.add_argument("--variants", action="store_true",
                        help="replay Pareto-ASHA + random under other rules too (grace, eta, rung cost, "
                             "foresight); rules in early_stop.json are reused unless the main replay reruns")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    return parser.parse_args()


def replay_variants(data: dict, bank: dict, space: SearchSpace, args: argparse.Namespace) -> list[dict]:
    """Pareto-ASHA + random under each rule of ``VARIANTS``, against the main replay's full-fidelity random; a rule
    already in ``data`` is reused unless the main replay ran again."""
    done = {json.dumps(v["rule"], sort_keys=True): v for v in data.get("variants", [])}
    if args.phase in ("all", "replay"):
        done = {}  # a new main replay: its variants are replayed again beside it
    variants = []
    here = machine_info()["cpu_model"]
    for variant in VARIANTS:
        previous = done.get(json.dumps(variant, sort_keys=True))
        if previous is not None:  # replayed already, on the same bank and main replay
            variants.append(previous)
            continue
        replayed = run_replays(bank, space, args.repeats, args.concurrent, args.scale, variant,
                               methods=("Pareto-ASHA + random",))
        method = replayed["methods"]["Pareto-ASHA + random"]
        full = data["replay"]["methods"]["random, full fidelity"]
        entry = {"rule": variant, "machine": here, "median_final": method["median"][-1],
                 "reach_random_final": epochs_to_reach(method["median"], full["median"][-1]),
                 "saving_first_half": saving_first_half(method, replayed["epochs"])}
        if "test" in method:
            entry.update(median_final_test=method["test"]["median"][-1],
                         reach_random_final_test=epochs_to_reach(method["test"]["median"],
                                                                 full["test"]["median"][-1]))
        variants.append(entry)
    return variants


def main() -> None:
    args = parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    bank_path = args.out / "curve_bank.json"
    space = bank_space(bank_path)
    results_path = args.out / "early_stop.json"
    data = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.phase in ("all", "bank"):
        bank = record_bank(space, bank_path, args.configs, args.seed)
    else:
        bank = json.loads(bank_path.read_text())
    if args.phase in ("all", "replicate") and args.replicate:
        replicate = record_bank(space, args.out / "curve_bank_replicate.json", args.replicate, args.seed,
                                train_seed=args.seed + 1)
        data["replicate"] = replicate_agreement(bank, replicate)
        if args.phase == "replicate":
            log(f"replicate: {data['replicate']}")
    rule = {"grace": args.grace, "eta": args.eta, "cost": args.rung_cost}
    if args.phase in ("all", "replay"):
        data["replay"] = run_replays(bank, space, args.repeats, args.concurrent, args.scale, rule)
    if args.variants:
        data["variants"] = replay_variants(data, bank, space, args)
    if args.phase in ("all", "real"):
        data["real"] = run_real(space, args.real_trials, args.concurrent, args.seed)
    if "replay" in data:
        if args.phase != "report":
            data.update(argv=recorded_argv(sys.argv[1:]), machine=machine_info())
        data["summary"] = summarise(data)
        write_report(args.out, "early_stop", data, markdown(data, bank, args.out / "early_stop_notes.md"),
                     plot=("early_stop.png", partial(plot, data)), final_newline=False)
        log(f"wrote {results_path}, early_stop.md, early_stop.png")


if __name__ == "__main__":
    main()
