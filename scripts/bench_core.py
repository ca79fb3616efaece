#!/usr/bin/env python
"""Core CPU benchmark of the CHEX engine: explore-step cost and compact-vs-dense inference speedup.

Not part of the package (nothing imports it). Writes ``core.json`` (every raw number) and ``core.md``
(prose, tables, targets) under ``--out``.

1. Explore-step cost: ``ChannelExplorer.explore()`` at a mid-exploration position against one training
   step (batch 64, forward + cross-entropy + backward + SGD-momentum step), for resnet50 at 224 px and
   resnet18 at 32 px, and the explore cost amortised over one Fashion-MNIST epoch (938 steps at batch
   64) and over 100 steps. Target: amortised over one epoch <= 1 %.
2. Inference speedup of the compacted model over the dense one at S = 0.5 and 0.7 for resnet18,
   resnet50 and mobilenetv2_100 at 224 px, batch 1 and 32, timed interleaved in one process. Target:
   speedup >= 0.8 x MACs ratio at batch 32 for the ResNets (mobilenetv2_100: reported only).

    python scripts/bench_core.py            # full run
    python scripts/bench_core.py --quick    # smoke run, fewer repeats
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

# isort: off
import chex_tune  # noqa: F401  (before timm: fixes the torchvision import)
import timm
# isort: on

from chex_tune import ChannelExplorer
from chex_tune.core.flops import count_macs, count_params

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import log, machine_info, md_table, median, recorded_command, timestamp, verdict, write_report  # noqa: E402
from eager_timer import measure_latency  # noqa: E402

EPOCH_STEPS = 938  # Fashion-MNIST: 60,000 images at batch 64
EVERY_STEPS = 100
STEP_BATCH = 64
EXPLORE_T = 10  # mid-exploration position (total=100, explore_until=0.72 -> stop=72)
AMORTISED_TARGET = 0.01
EFFICIENCY_TARGET = 0.8

EXPLORE_MODELS = [  # (timm name, image px, num_classes)
    ("resnet18", 32, 10),
    ("resnet50", 224, 1000),
]
LATENCY_MODELS = ["resnet18", "resnet50", "mobilenetv2_100"]
LATENCY_PX = 224
SPARSITIES = [0.5, 0.7]
BATCHES = [1, 32]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------------------- 1. explore cost
def train_step_fn(model: nn.Module, optimizer: torch.optim.Optimizer, batch: int, px: int, classes: int):
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, px, px, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return (time.perf_counter() - start) * 1e3
    return step


def timed_ms(call: Callable[[], object]) -> float:
    """Milliseconds one ``call()`` takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def build_explorer(name: str, px: int, classes: int):
    """A random-init timm model in train mode, its optimizer, a mid-exploration explorer of it (its per-step
    mask hook removed) and the seconds building the explorer took."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=classes, in_chans=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    example = torch.randn(1, 3, px, px)
    start = time.perf_counter()
    ex = ChannelExplorer(model, example, sparsity=0.5, regrow_ratio=0.3, period=1, total=100,
                         explore_until=0.72, optimizer=optimizer)
    build_s = time.perf_counter() - start
    # The optimizer is passed so that explore() resets restored entries' momentum, as in training;
    # its per-step mask hook is removed so the training step below is the bare step.
    ex.remove_hooks()
    model.train()
    return model, optimizer, ex, build_s


def bench_explore(name: str, px: int, classes: int, *, explore_repeats: int, step_repeats: int,
                  step_batch: int, mask_repeats: int) -> dict:
    log(f"explore: {name} @ {px} px")
    model, optimizer, ex, build_s = build_explorer(name, px, classes)
    step = train_step_fn(model, optimizer, step_batch, px, classes)

    step_warmup_ms = step()  # also creates the momentum buffers explore() resets
    log(f"  step warm-up {step_warmup_ms:.0f} ms (batch {step_batch}); build {build_s:.1f} s")

    def explore_once() -> float:
        ex.t = EXPLORE_T
        return timed_ms(ex.explore)

    explore_warmup_ms = explore_once()
    explore_ms = [explore_once() for _ in range(explore_repeats)]
    log(f"  explore median {median(explore_ms):.0f} ms over {explore_ms}")

    step_ms = [step() for _ in range(step_repeats)]
    log(f"  step median {median(step_ms):.0f} ms over {[round(s) for s in step_ms]}")

    mask_ms = [timed_ms(ex.apply_masks) for _ in range(mask_repeats)]
    return explore_result(ex, name, px, classes, build_s=build_s, explore_warmup_ms=explore_warmup_ms,
                          explore_ms=explore_ms, step_batch=step_batch, step_warmup_ms=step_warmup_ms,
                          step_ms=step_ms, mask_ms=mask_ms)


def explore_result(ex: ChannelExplorer, name: str, px: int, classes: int, *, build_s: float,
                   explore_warmup_ms: float, explore_ms: list[float], step_batch: int, step_warmup_ms: float,
                   step_ms: list[float], mask_ms: list[float]) -> dict:
    """One model's explore-cost row: the raw times, their medians and the cost amortised over N steps."""
    explore_med = median(explore_ms)
    step_med = median(step_ms)
    step_at_64 = step_med * STEP_BATCH / step_batch
    amort_epoch = explore_med / (EPOCH_STEPS * step_at_64)
    amort_100 = explore_med / (EVERY_STEPS * step_at_64)
    return {
        "model": name, "px": px, "num_classes": classes, "in_chans": 3,
        "explorer": {"sparsity": 0.5, "regrow_ratio": 0.3, "period": 1, "total": 100, "explore_until": 0.72,
                     "t": EXPLORE_T, "regrow_factor_at_t": ex.schedule.regrow_factor(EXPLORE_T, 0.3),
                     "groups": len(ex.groups), "prunable_groups": len(ex.state.groups)},
        "build_s": build_s,
        "explore_warmup_ms": explore_warmup_ms, "explore_ms": explore_ms, "explore_median_ms": explore_med,
        "step": {"batch_measured": step_batch, "batch_reported": STEP_BATCH,
                 "scaled_linearly": step_batch != STEP_BATCH,
                 "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)", "loss": "cross-entropy",
                 "warmup_ms": step_warmup_ms, "times_ms": step_ms, "median_ms": step_med,
                 "median_ms_at_batch_64": step_at_64},
        "apply_masks_ms": mask_ms, "apply_masks_median_ms": median(mask_ms),
        "explore_over_step": explore_med / step_at_64,
        "amortised_epoch": amort_epoch, "amortised_every_100": amort_100,
        "target_amortised_epoch": AMORTISED_TARGET, "pass": amort_epoch <= AMORTISED_TARGET,
        "peak_rss_mib_so_far": peak_rss_mib(),
    }


# ---------------------------------------------------------------------------------- 2. speedup
def bench_speedup(name: str, *, repeats: dict[int, int], warmup: dict[int, int]) -> list[dict]:
    log(f"speedup: {name} @ {LATENCY_PX} px")
    torch.manual_seed(0)
    dense = timm.create_model(name, pretrained=False, num_classes=1000, in_chans=3).eval()
    example = torch.randn(1, 3, LATENCY_PX, LATENCY_PX)
    dense_macs = count_macs(dense, example)
    models = {"dense": dense}
    info = {}
    for s in SPARSITIES:
        masked = copy.deepcopy(dense)
        start = time.perf_counter()
        # regrow_ratio=0 and total=1: the step-0 masks are the final ones.
        ex = ChannelExplorer(masked, example, sparsity=s, regrow_ratio=0.0, period=1, total=1)
        small = ex.compact().eval()
        build_s = time.perf_counter() - start
        with torch.inference_mode():
            x = torch.randn(2, 3, LATENCY_PX, LATENCY_PX)
            max_abs_diff = float((masked.eval()(x) - small(x)).abs().max())
        compact_macs = count_macs(small, example)
        info[s] = {"build_and_compact_s": build_s, "channel_sparsity": ex.sparsity(),
                   "explorer_macs": ex.macs(), "explorer_dense_macs": ex.dense_macs(),
                   "compact_macs": compact_macs, "compact_params": count_params(small),
                   "max_abs_diff_masked_vs_compact": max_abs_diff}
        models[f"S={s}"] = small
        del ex, masked
    shape = (3, LATENCY_PX, LATENCY_PX)
    rows = []
    for batch in BATCHES:
        for m in models.values():  # warm-up, not recorded
            measure_latency(m, shape, batch_size=batch, repeats=1, warmup=warmup[batch])
        times = {key: [] for key in models}
        conditions = None
        for _ in range(repeats[batch]):  # interleaved: dense, S=0.5, S=0.7, dense, ...
            for key, m in models.items():
                result = measure_latency(m, shape, batch_size=batch, repeats=1, warmup=0)
                times[key].append(result["latency_ms"])
                conditions = conditions or result
        dense_ms = median(times["dense"])
        log(f"  batch {batch}: " + ", ".join(f"{k} {median(v):.1f} ms" for k, v in times.items()))
        for s in SPARSITIES:
            compact_ms = median(times[f"S={s}"])
            macs_ratio = dense_macs / info[s]["compact_macs"]
            speedup = dense_ms / compact_ms
            target = name.startswith("resnet") and batch == 32
            rows.append({
                "model": name, "px": LATENCY_PX, "batch": batch, "sparsity": s,
                "repeats": repeats[batch], "warmup": warmup[batch],
                "threads": conditions["threads"],
                "device": conditions["device"], "dtype": conditions["dtype"],
                "dense_times_ms": times["dense"], "compact_times_ms": times[f"S={s}"],
                "dense_ms": dense_ms, "compact_ms": compact_ms, "speedup": speedup,
                "dense_macs": dense_macs, "dense_params": count_params(dense), **info[s],
                "macs_ratio": macs_ratio, "speedup_over_macs_ratio": speedup / macs_ratio,
                "target": EFFICIENCY_TARGET if target else None,
                "pass": (speedup / macs_ratio >= EFFICIENCY_TARGET) if target else None,
            })
    return rows


# ----------------------------------------------------------------------------------- report
def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def header_lines(data: dict) -> list[str]:
    """Title, the command that made the numbers, and the machine they were measured on."""
    meta, mach = data["meta"], data["machine"]
    ver = mach["versions"]
    return [
        "# Core engine benchmark (CPU)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} in {meta['duration_s'] / 60:.1f} min"
        + (" — **quick smoke run (few repeats), not the reference numbers**." if meta["quick"] else "."),
        "",
        f"Machine: {mach['nproc']} CPU cores (`nproc`), {mach['cpu_model']} (`/proc/cpuinfo`), "
        f"{mach['mem_total_gib']} GiB RAM, no GPU; torch {ver['torch']} with "
        f"{mach['torch_threads']} intra-op threads, timm {ver['timm']}, "
        f"torch-pruning {ver['torch-pruning']}, chex-tune {ver['chex-tune']}, "
        f"Python {ver['python']}. Load average (1 min) at start / end: "
        f"{meta['loadavg_start'][0]:.2f} / {meta['loadavg_end'][0]:.2f} — well above "
        f"{mach['nproc']} means something else shared the cores and the times are inflated. "
        f"Peak RSS {meta['peak_rss_mib']:.0f} MiB. Models are timm, randomly initialised "
        "(`pretrained=False`), float32, 3 input channels. Raw per-repeat times and all settings are in "
        "`core.json`.",
        "",
    ]


def explore_section(data: dict) -> list[str]:
    """Part 1: how explore() and the training step were timed, and the table of their costs."""
    lines = [
        "## 1. Explore-step cost",
        "",
        "`ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.3, period=1, total=100, explore_until=0.72, "
        f"optimizer=sgd)`; `ex.t` is set to {EXPLORE_T} before each `ex.explore()` (mid-exploration, regrow "
        "factor ~0.29, CSS scoring + projection regrowth, optimizer-state reset of restored entries). "
        "explore() is timed after one SGD step (BN gammas no longer all 1, as mid-training); its cost "
        "depends on the mask/gamma state (CSS runs an SVD per group only where active channels must go). "
        "Explore: median of the timed calls after one warm-up call, each call starting from the previous "
        "call's masks. Training step: batch 64 of random "
        "images and labels, model in train mode, forward + cross-entropy + backward + "
        "SGD(momentum 0.9) step; median after one warm-up step. "
        f"Amortised = explore / (N x step) with N = {EPOCH_STEPS} (one Fashion-MNIST epoch at batch 64, "
        f"explore once per epoch) or N = {EVERY_STEPS} (explore every 100 steps). resnet18 at 32 px "
        "(10 classes) stands in for the Fashion-MNIST setting; resnet50 at 224 px (1000 classes) is the "
        "large case. "
        "`apply_masks` is the per-step mask re-application `ex.step()` does between explores.",
        "",
    ]
    scaled = [r for r in data["explore"] if r["step"]["scaled_linearly"]]
    if scaled:
        lines += ["**Note:** the training step of " + ", ".join(
            f"{r['model']} was measured at batch {r['step']['batch_measured']}" for r in scaled)
            + " and scaled linearly to batch 64.", ""]
    return lines + md_table(
        ["model", "px", "explore ms (n)", "step ms @64 (n)", "explore / step", "amortised / epoch (938)",
         "amortised / 100 steps", "apply_masks ms", "build s"],
        ([r["model"], str(r["px"]), f"{r['explore_median_ms']:.0f} ({len(r['explore_ms'])})",
          f"{r['step']['median_ms_at_batch_64']:.0f} ({len(r['step']['times_ms'])})",
          f"{r['explore_over_step']:.2f}", pct(r["amortised_epoch"]), pct(r["amortised_every_100"]),
          f"{r['apply_masks_median_ms']:.1f}", f"{r['build_s']:.1f}"] for r in data["explore"]))


def speedup_section(data: dict) -> list[str]:
    """Part 2: how compact and dense were timed, and the table of speedups against MACs ratios."""
    return [
        "",
        "## 2. Inference speedup, compact vs dense",
        "",
        "Dense model (eval) against "
        "`ChannelExplorer(model, x, sparsity=S, regrow_ratio=0, total=1).compact()` "
        f"at {LATENCY_PX} px, 1000 classes. These are the engine's step-0 masks: uniform per-group widths, "
        "filters kept by L1 norm (the default allocator ranks by |BN gamma| in later explore steps, but at "
        "init every gamma is 1, so no learned allocation exists yet). "
        "Dense and both compact models are timed in one process, interleaved "
        "(dense, S=0.5, S=0.7, dense, ...) "
        "with `chex_tune.core.latency.measure_latency` (one forward pass per call, `torch.inference_mode`, "
        f"{data['machine']['torch_threads']} threads) after warm-up passes; each figure is the median. "
        "MACs per sample by `count_macs`; efficiency = speedup / MACs ratio.",
        "",
        *md_table(["model", "batch", "S", "channel sparsity", "dense ms", "compact ms (n)", "speedup", "MACs ratio",
                   "efficiency"],
                  ([r["model"], str(r["batch"]), str(r["sparsity"]), f"{r['channel_sparsity']:.2f}",
                    f"{r['dense_ms']:.1f}", f"{r['compact_ms']:.1f} ({r['repeats']})", f"{r['speedup']:.2f}x",
                    f"{r['macs_ratio']:.2f}x", f"{r['speedup_over_macs_ratio']:.2f}"] for r in data["speedup"])),
    ]


def targets_section(data: dict) -> list[str]:
    """Each target with its verdict and margin; mobilenetv2_100's efficiency reported without one."""
    lines = ["", "## Targets", ""]
    for r in data["explore"]:
        margin = AMORTISED_TARGET - r["amortised_epoch"]
        lines.append(
            f"- Explore amortised over one epoch <= 1 %, {r['model']} @ {r['px']} px: "
            f"**{verdict(r['pass'])}** — {pct(r['amortised_epoch'])} "
            f"({'under' if margin >= 0 else 'over'} the target by {abs(100 * margin):.2f} points; "
            f"{r['amortised_epoch'] / AMORTISED_TARGET:.2f}x the budget).")
    for r in data["speedup"]:
        if r["target"] is None:
            continue
        eff = r["speedup_over_macs_ratio"]
        lines.append(
            f"- Speedup >= 0.8 x MACs ratio, {r['model']} S={r['sparsity']} batch {r['batch']}: "
            f"**{verdict(r['pass'])}** — {r['speedup']:.2f}x vs {r['macs_ratio']:.2f}x MACs, "
            f"efficiency {eff:.2f} ({'+' if eff >= EFFICIENCY_TARGET else ''}{eff - EFFICIENCY_TARGET:.2f} "
            "against 0.80).")
    mbv2 = [r for r in data["speedup"] if r["model"].startswith("mobilenet")]
    if mbv2:
        effs = ", ".join(f"S={r['sparsity']} batch {r['batch']}: {r['speedup_over_macs_ratio']:.2f}"
                         for r in mbv2)
        lines.append(
            f"- mobilenetv2_100 (reported, no target): efficiency {effs}. Depthwise-separable nets are "
            "memory-bound on CPU, so removing MACs buys less time than it does for the ResNets (about "
            "0.5-0.6 expected); this is why latency is an objective of its own and MACs are not used as "
            "its proxy.")
    return lines


def markdown(data: dict) -> str:
    return "\n".join(header_lines(data) + explore_section(data) + speedup_section(data) + targets_section(data)) \
        + "\n"


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats (not reference numbers)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats for explore() and for batch-32 latency (default 7; --quick 2)")
    parser.add_argument("--b1-repeats", type=int, default=None,
                        help="timed repeats for batch-1 latency (default 30; --quick 5)")
    parser.add_argument("--heavy-repeats", type=int, default=None,
                        help="timed repeats for resnet50 explore() and training steps (default 3; --quick 1)")
    parser.add_argument("--step-repeats", type=int, default=None,
                        help="timed training steps for resnet18 @ 32 px (default 7; --quick 2)")
    parser.add_argument("--r50-step-batch", type=int, default=STEP_BATCH,
                        help="batch at which the resnet50 training step is measured; other than 64 it is "
                             "scaled linearly to 64 (use 16 if memory is short)")
    parser.add_argument("--skip", choices=["explore", "speedup"], action="append", default=[],
                        help="skip a part (may repeat)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"),
                        help="output folder (default benchmarks/)")
    args = parser.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats or (2 if q else 7)
    args.b1_repeats = args.b1_repeats or (5 if q else 30)
    args.heavy_repeats = args.heavy_repeats or (1 if q else 3)
    args.step_repeats = args.step_repeats or (2 if q else 7)
    return args


def run_meta(args: argparse.Namespace) -> dict:
    """What the result records of its run before it starts: the command, the date, the load, the settings."""
    command, recorded = recorded_command()
    return {"command": command, "argv": recorded, "quick": args.quick, "date": timestamp(),
            "loadavg_start": os.getloadavg(),
            "settings": {"repeats": args.repeats, "b1_repeats": args.b1_repeats, "heavy_repeats": args.heavy_repeats,
                         "step_repeats": args.step_repeats, "r50_step_batch": args.r50_step_batch,
                         "epoch_steps": EPOCH_STEPS, "every_steps": EVERY_STEPS,
                         "explore_t": EXPLORE_T,
                         "latency_px": LATENCY_PX, "sparsities": SPARSITIES, "batches": BATCHES,
                         "targets": {"amortised_epoch_max": AMORTISED_TARGET,
                                     "speedup_over_macs_ratio_min": EFFICIENCY_TARGET}}}


def main(argv=None) -> int:
    args = parse_args(argv)
    q = args.quick
    torch.set_num_threads(2)
    started = time.perf_counter()
    data = {"meta": run_meta(args), "machine": machine_info(), "explore": [], "speedup": []}

    if "explore" not in args.skip:
        for name, px, classes in EXPLORE_MODELS:
            big = name == "resnet50"
            data["explore"].append(bench_explore(
                name, px, classes, explore_repeats=args.heavy_repeats if big else args.repeats,
                step_repeats=args.heavy_repeats if big else args.step_repeats,
                step_batch=args.r50_step_batch if big else STEP_BATCH, mask_repeats=5 if q else 10))
    if "speedup" not in args.skip:
        for name in LATENCY_MODELS:
            data["speedup"] += bench_speedup(name, repeats={1: args.b1_repeats, 32: args.repeats},
                                             warmup={1: 2 if q else 5, 32: 1 if q else 2})

    data["meta"]["duration_s"] = time.perf_counter() - started
    data["meta"]["loadavg_end"] = os.getloadavg()
    data["meta"]["peak_rss_mib"] = peak_rss_mib()
    write_report(args.out, "core", data, markdown(data), indent=2)
    minutes = data["meta"]["duration_s"] / 60
    log(f"wrote {args.out / 'core.json'} and {args.out / 'core.md'} in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
