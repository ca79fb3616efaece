"""Coverage benchmark: does ChannelExplorer prune (exactly) across many timm CNN families?

For each model, in its own subprocess (so a crash, hang or segfault becomes a row, not the end of
the run): build it (random init, 10 classes), wrap it in a ChannelExplorer (sparsity 0.5, regrow
0.2, period 1, total 6, explore_until 0.72), interleave 6 random-data SGD steps with ``ex.step()``,
then compact it and check, in eval mode, that

  * the compact model's output equals the masked model's (relative max |diff| <= 1e-4),
  * the compact model's hook-counted MACs equal the explorer's analytic count,
  * save_compact / load_compact rebuilds the same model (relative max |diff| <= 1e-4).

    python scripts/coverage.py                       # the built-in list, 64x64 inputs
    python scripts/coverage.py --models resnet18 vgg11 --size 32 --timeout 120

Writes ``<out>/coverage.json`` and ``<out>/coverage.md``. This script is not part of the package.
"""

from __future__ import annotations

import chex_tune  # noqa: F401  (first, before anything imports timm: the torchvision import fix)

# isort: split

import argparse
import copy
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

TOLERANCE = 1e-4
SETTINGS = dict(sparsity=0.5, regrow_ratio=0.2, period=1, total=6, explore_until=0.72)
STEPS = 6
TARGET_PRUNED = 90.0  # % of models pruned with exact equivalence
TARGET_OK = 100.0  # % of models without crash, timeout or wrong output

MODELS = [
    "resnet18", "resnet50", "resnet101", "resnext50_32x4d", "seresnet18", "seresnext26d_32x4d",
    "wide_resnet50_2", "resnet26d", "mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100",
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnetv2_b0", "regnetx_002", "regnety_002",
    "regnetz_005", "convnext_atto", "convnext_nano", "densenet121", "ghostnet_100", "vgg11", "vgg11_bn",
    "dla34", "hrnet_w18_small", "cspresnet50", "cspdarknet53", "res2net50_14w_8s", "mixnet_s",
    "mnasnet_100", "fbnetc_100", "spnasnet_100", "rexnet_100", "dpn68", "selecsls42b", "hardcorenas_a",
    "tinynet_a", "lcnet_050", "repvgg_a0", "resnest14d", "skresnet18", "inception_v3", "xception41",
    "ese_vovnet19b_dw", "nfnet_l0", "efficientvit_b0", "gernet_s", "darknet53", "mobileone_s0",
    "fastvit_t8", "ecaresnet26t",
]
# Fallbacks when a name is missing from the installed timm (first one that exists wins).
SIBLINGS = {
    "regnetz_005": ["regnetz_b16", "regnetz_c16"],
    "repvgg_a0": ["repvgg_a2", "repvgg_a1", "repvgg_b0"],
    "nfnet_l0": ["dm_nfnet_f0", "nf_resnet50", "nf_regnet_b0"],
    "efficientvit_b0": ["efficientvit_b1"],
    "fastvit_t8": ["fastvit_t12", "fastvit_s12"],
}
MIN_SIZE = {"inception_v3": 96}  # inception_v3 needs at least 75x75
# Import chex_tune from this checkout (not from whatever is installed at the moment).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, str(Path(__file__).parent))
from benchlib import md_table, package_versions, script_command, timestamp, write_report  # noqa: E402


def input_size(name: str, size: int) -> int:
    return max(size, MIN_SIZE.get(name, 0))


# ==================================================================================== child side
def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _first_output(out):
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _traceback_summary(exc: BaseException) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "chex_tune" in f.filename and "site-packages" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    deepest = frames[-1] if frames else None
    fmt = lambda f: f"{os.path.relpath(f.filename) if 'chex_tune' in f.filename else f.filename}:{f.lineno} in {f.name}"  # noqa: E731
    return {
        "error": _short(f"{type(exc).__name__}: {exc}", 400),
        "chex_frame": fmt(where) if where else None,
        "deepest_frame": fmt(deepest) if deepest else None,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
    }


class _Row(dict):
    """A row that announces each stage on stderr, so a parent that kills us knows where we were."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if key == "stage":
            sys.stderr.write(f"@@stage {value} {time.perf_counter():.1f}\n")
            sys.stderr.flush()


@contextmanager
def _stage(row: dict, times: dict[str, float], name: str, *, timed: bool = True):
    """One stage of a model's run: announced on the row (and so on stderr), its seconds kept when it ends."""
    row["stage"] = name
    start = time.perf_counter()
    yield
    if timed:
        times[name] = time.perf_counter() - start


def _construct(row: dict, model, x):
    """The explorer of ``model``; its warnings (the engine's own first) and channel groups go on the row."""
    from chex_tune import ChannelExplorer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = ChannelExplorer(model, x, **SETTINGS)
    texts = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught
                               if issubclass(w.category, UserWarning)))  # unique, in order
    texts.sort(key=lambda t: not ("stays dense" in t or "stay unpruned" in t))  # the engine's own first
    row["warnings"] = [_short(t, 600) for t in texts[:5]]
    groups = ex.groups
    dense = [g for g in groups if not g.prunable]
    total_ch = sum(g.channels for g in groups)
    row.update(
        groups_total=len(groups),
        groups_pruned=len(ex.state.groups),
        groups_dense=len(dense),
        dense_reasons=[f"{g.name}: {_short(g.skip_reason, 140)}" for g in dense],
        channels_prunable=(sum(g.channels for g in ex.state.groups) / total_ch) if total_ch else 0.0,
    )
    return ex


def _train(row: dict, model, ex, size: int) -> None:
    """``STEPS`` random-data SGD steps, each followed by ``ex.step()``."""
    import torch

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    explored = 0
    for _ in range(STEPS):
        xb = torch.randn(2, 3, size, size, generator=gen)
        out = _first_output(model(xb))
        target = torch.randn(out.shape, generator=gen)
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        explored += bool(ex.step())
    row["explore_steps"] = explored
    row["sparsity"] = ex.sparsity()


def _check_output(row: dict, model, small, x) -> None:
    """Masked against compact output; where they differ, the same in float64 and the masked model's own
    float32 round-off, to tell a wrong compaction from an ill-conditioned net."""
    import torch

    from chex_tune.core.compact import max_output_difference

    row["max_diff"] = max_output_difference(model, small, x)
    if not row["max_diff"] <= TOLERANCE:  # wrong, or float32 round-off of an ill-conditioned net?
        with torch.no_grad():
            m64, s64, x64 = copy.deepcopy(model).double(), copy.deepcopy(small).double(), x.double()
            row["max_diff_fp64"] = max_output_difference(m64, s64, x64)
            ref = _first_output(m64.eval()(x64))
            row["fp32_noise"] = float((_first_output(model(x)).double() - ref).abs().max()
                                      / ref.abs().max().clamp_min(1e-300))


def _check_macs(row: dict, model, ex, small, x) -> None:
    """Hook-counted MACs of the dense and compact models against the explorer's analytic counts."""
    from chex_tune.core.flops import count_macs

    dense_macs, ex_macs = ex.dense_macs(), ex.macs()
    compact_macs = count_macs(small, x)
    row.update(dense_macs_M=dense_macs / 1e6, explorer_macs_M=ex_macs / 1e6,
               compact_macs_M=compact_macs / 1e6, macs_equal=bool(compact_macs == ex_macs),
               dense_count_equal=bool(count_macs(model, x) == dense_macs),
               dense_params_M=ex.dense_params() / 1e6,
               compact_params_M=sum(p.numel() for p in small.parameters()) / 1e6)


def _reload_difference(name: str, small, x) -> float:
    """How far a save_compact / load_compact round trip's output is from the compact model's."""
    from chex_tune import load_compact, save_compact
    from chex_tune.core.compact import max_output_difference

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.pt")
        save_compact(small, path)
        reloaded = load_compact(path)
    return max_output_difference(small, reloaded, x)


def run_one(name: str, size: int, dump_after: float | None = None) -> dict:
    """Everything for one model; returns a row (never raises)."""
    if dump_after:  # a hang: print every thread's stack shortly before the parent kills us
        import faulthandler

        faulthandler.dump_traceback_later(dump_after, exit=False)
    row: dict = _Row(model=name, size=size)
    row["stage"] = "import"
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        import timm
        import torch

        for module in ("chex_tune.core.explorer", "chex_tune.core.compact", "chex_tune.core.flops"):
            importlib.import_module(module)  # what the stages import, so that a failing import is this stage's

        with _stage(row, times, "create", timed=False):
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, num_classes=10)
            x = torch.randn(2, 3, size, size)
        times["create"] = time.perf_counter() - t0  # with the imports
        with _stage(row, times, "construct"):
            ex = _construct(row, model, x)
        with _stage(row, times, "train"):
            _train(row, model, ex, size)
        with _stage(row, times, "compact"):
            model.eval()
            small = ex.compact().eval()
        with _stage(row, times, "diff", timed=False):
            _check_output(row, model, small, x)
        with _stage(row, times, "macs", timed=False):
            _check_macs(row, model, ex, small, x)
        with _stage(row, times, "reload"):
            row["reload_diff"] = _reload_difference(name, small, x)
        row["stage"] = "done"
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        row.update(_traceback_summary(exc))
    row["stage_seconds"] = {k: round(v, 2) for k, v in times.items()}
    return dict(row)


def classify(row: dict) -> str:
    if row.get("stage") != "done":
        return "crash"
    problems = []
    if not row["max_diff"] <= TOLERANCE:
        text = f"compact output differs (relative {row['max_diff']:.1e})"
        if row.get("max_diff_fp64") is not None:
            fp64, noise = row["max_diff_fp64"], row.get("fp32_noise", float("nan"))
            text += f"; in float64 {fp64:.1e}, float32 round-off of the masked model alone {noise:.1e}"
            row["fp32_noise_only"] = bool(fp64 <= 1e-9 and noise > TOLERANCE)
            if row["fp32_noise_only"]:
                text += " (float32 noise: compaction exact in float64)"
        problems.append(text)
    if not row["macs_equal"]:
        problems.append(f"MACs mismatch: compact {row['compact_macs_M']:.3f}M vs explorer "
                        f"{row['explorer_macs_M']:.3f}M")
    if not row["reload_diff"] <= TOLERANCE:
        problems.append(f"reload differs (relative {row['reload_diff']:.1e})")
    if row["groups_pruned"] > 0 and not row["compact_macs_M"] < row["dense_macs_M"]:
        problems.append("prunable groups but no MACs removed")
    if problems:
        row["problems"] = problems
        return "wrong"
    if row["groups_pruned"] > 0:
        return "pruned"
    return "fallback"


# =================================================================================== parent side
def family_of(name: str) -> str:
    try:
        import timm

        return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    except Exception:  # noqa: BLE001
        return "?"


def resolve_names(names: list[str]) -> list[tuple[str, str]]:
    """(requested, used) pairs; a missing name is replaced by its first existing sibling."""
    import timm


    pairs = []
    for name in names:
        if timm.list_models(name):
            pairs.append((name, name))
            continue
        for sibling in SIBLINGS.get(name, []):
            if timm.list_models(sibling):
                pairs.append((name, sibling))
                break
        else:
            pairs.append((name, name))  # will show up as a crash row
    return pairs


def run_child(name: str, size: int, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--size", str(size),
           "--timeout", str(max(timeout - 10, timeout * 0.9))]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"model": name, "size": size, "status": "timeout", "seconds": round(time.perf_counter() - start, 1),
                "stage": _last_stage(tail), "error": f"no result within {timeout:.0f} s",
                "hang_at": _hang_frames(tail), "stderr_tail": tail[-3000:]}
    seconds = round(time.perf_counter() - start, 1)
    row = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                row = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if row is None:
        signal_note = f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
        row = {"model": name, "size": size, "status": "crash", "stage": _last_stage(proc.stderr),
               "error": f"child exited with code {proc.returncode}{signal_note} without a result",
               "hang_at": _hang_frames(proc.stderr), "stderr_tail": proc.stderr[-3000:]}
    else:
        row["status"] = classify(row)
    row["seconds"] = seconds
    return row


def _last_stage(stderr: str) -> str | None:
    """The stage the child was in (when faulthandler dumped its stack, if it did)."""
    stages = []
    for line in stderr.splitlines():
        if line.startswith("Timeout ("):
            break
        if line.startswith("@@stage "):
            stages.append(line.split()[1])
    return stages[-1] if stages else None


def _hang_frames(stderr: str) -> list[str]:
    """From a faulthandler dump: the main thread's innermost frames (chex_tune and torch-pruning first)."""
    frames = [line.strip() for line in stderr.splitlines() if line.strip().startswith('File "')]
    if not frames:
        return []
    # faulthandler lists the innermost frame first; keep the innermost few plus our own frames
    ours = [f for f in frames if "chex_tune" in f or "torch_pruning" in f]
    return frames[:4] + [f for f in ours if f not in frames[:4]][:6]


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    count = lambda s: sum(r["status"] == s for r in rows)  # noqa: E731
    pruned, fallback = count("pruned"), count("fallback")
    ok = pruned + fallback
    pct = lambda k: 100.0 * k / n if n else 0.0  # noqa: E731
    return {
        "models": n, "pruned": pruned, "fallback": fallback, "crash": count("crash"),
        "timeout": count("timeout"), "wrong": count("wrong"),
        "wrong_fp32_noise_only": sum(r["status"] == "wrong" and bool(r.get("fp32_noise_only")) for r in rows),
        "pruned_pct": pct(pruned), "fallback_pct": pct(fallback), "ok_pct": pct(ok),
        "pruned_target_pct": TARGET_PRUNED, "ok_target_pct": TARGET_OK,
        "pruned_pass": pct(pruned) >= TARGET_PRUNED, "ok_pass": pct(ok) >= TARGET_OK,
        "total_seconds": round(sum(r.get("seconds", 0) for r in rows), 1),
    }


def _verdict(value: float, target: float, n: int) -> str:
    if value >= target:
        return f"PASS (target >= {target:.0f}%)"
    missing = -(-(target - value) * n // 100)  # models needed, rounded up
    return f"MISS by {target - value:.1f} points, {int(missing)} model(s) (target >= {target:.0f}%)"


def summary_line(s: dict) -> str:
    n = s["models"]
    return (f"{n} models: {s['pruned_pct']:.1f}% pruned with exact equivalence "
            f"[{_verdict(s['pruned_pct'], TARGET_PRUNED, n)}], {s['fallback_pct']:.1f}% fallback (dense, by the "
            f"engine's choice), {s['ok_pct']:.1f}% without crash or wrong output "
            f"[{_verdict(s['ok_pct'], TARGET_OK, n)}]")


def _note(row: dict) -> str:
    status = row["status"]
    if status in ("crash", "timeout"):
        where = row.get("chex_frame") or row.get("deepest_frame") or ""
        stage = f"[{row.get('stage')}] " if row.get("stage") else ""
        if not where and row.get("hang_at"):
            where = next((f for f in row["hang_at"] if "chex_tune" in f), row["hang_at"][0])
            where = where.replace('File "', "").replace('", line ', ":").split(os.sep + "site-packages" + os.sep)[-1]
        return _short(f"{stage}{row.get('error', '')}" + (f" @ {where}" if where else ""), 260)
    if status == "wrong":
        return _short("; ".join(row.get("problems", [])), 260)
    if status == "fallback" and row.get("groups_total", 0) == 0:
        return _short("; ".join(row.get("warnings", [])) or "no channel groups", 260)
    reasons = row.get("dense_reasons", [])
    if reasons:
        more = f" (+{len(reasons) - 2} more)" if len(reasons) > 2 else ""
        return _short("; ".join(reasons[:2]), 220) + more
    return ""


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def markdown(rows: list[dict], meta: dict, summary: dict) -> str:
    lines = [
        "# ChannelExplorer coverage over timm CNNs",
        "",
        "Each model runs in its own subprocess (a crash, hang or segfault is one row). Per model: "
        "`timm.create_model(name, pretrained=False, num_classes=10)` with `torch.manual_seed(0)`; "
        f"`ChannelExplorer(model, x, {', '.join(f'{k}={v}' for k, v in SETTINGS.items())})` with "
        f"x = randn(2, 3, S, S); {STEPS} random-data SGD steps (lr 0.01, momentum 0.9, MSE to random "
        "targets, train mode), each followed by `ex.step()`; then in eval mode `ex.compact()` and three checks: "
        f"masked vs compact output (relative max |diff| <= {TOLERANCE:g}), hook-counted MACs of the compact "
        "model == `ex.macs()`, and a `save_compact`/`load_compact` round trip (relative max |diff| <= "
        f"{TOLERANCE:g}).",
        "",
        "Status: `pruned` = at least one prunable group, fewer MACs, all checks pass; `fallback` = the engine "
        "left the whole model dense (graph build failed or no group verified) and the checks pass; `wrong` = a "
        "check failed; `crash` / `timeout` = no result (per-model limit "
        f"{meta['timeout_s']:.0f} s).",
        "",
        f"Settings: S = {meta['size']} (inception_v3: {input_size('inception_v3', meta['size'])}), "
        f"torch {meta['versions']['torch']}, timm {meta['versions']['timm']}, torch-pruning "
        f"{meta['versions']['torch_pruning']}, CPU, {meta['date']}. Total {summary['total_seconds']:.0f} s.",
        "",
        f"Reproduce: `{meta['command']}`",
        "",
        f"**Summary: {summary_line(summary)}.**",
        "",
        f"Counts: pruned {summary['pruned']}, fallback {summary['fallback']}, wrong {summary['wrong']}, "
        f"crash {summary['crash']}, timeout {summary['timeout']}. Of the `wrong` rows, "
        f"{summary['wrong_fp32_noise_only']} differ only by float32 round-off: recomputed in float64 the masked and "
        "compact outputs agree to <= 1e-9, while the masked model's own float32-vs-float64 difference exceeds "
        f"{TOLERANCE:g} (the random SGD steps leave these nets ill-conditioned).",
        "",
        *md_table(["model", "family", "S", "status", "groups", "pruned", "dense", "ch. prunable", "dense MMACs",
                   "compact MMACs", "MACs eq", "max diff", "reload diff", "s", "notes"], map(_cells, rows)),
    ]
    return "\n".join(lines) + "\n"


def _cells(r: dict) -> list[str]:
    return [
        r["model"] + (f" (for {r['requested']})" if r.get("requested", r["model"]) != r["model"] else ""),
        r.get("family", "?"), str(r.get("size", "-")),
        f"**{r['status']}**" if r["status"] != "pruned" else r["status"],
        _fmt(r.get("groups_total"), "d"), _fmt(r.get("groups_pruned"), "d"), _fmt(r.get("groups_dense"), "d"),
        _fmt(r.get("channels_prunable"), ".0%"), _fmt(r.get("dense_macs_M"), ".1f"),
        _fmt(r.get("compact_macs_M"), ".1f"), _fmt(r.get("macs_equal"), ""), _fmt(r.get("max_diff"), ".1e"),
        _fmt(r.get("reload_diff"), ".1e"), _fmt(r.get("seconds"), ".0f"),
        _note(r).replace("|", "\\|"),
    ]


def write_outputs(out_dir: str, rows: list[dict], meta: dict) -> None:
    summary = summarize(rows)
    data = {**meta, "summary": summary, "summary_line": summary_line(summary), "rows": rows}
    write_report(Path(out_dir), "coverage", data, markdown(rows, meta, summary), final_newline=False)


def versions() -> dict:
    return {"python": platform.python_version(),
            **package_versions((("torch", "torch"), ("timm", "timm"), ("torch_pruning", "torch-pruning"),
                                ("chex_tune", "chex-tune")))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="timm model names (default: built-in list)")
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model (default 300)")
    parser.add_argument("--out", default="benchmarks/", help="output folder (default benchmarks/)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one model, one JSON line
    args = parser.parse_args(argv)

    if args.one is not None:
        row = run_one(args.one, args.size, dump_after=args.timeout)
        sys.stdout.write("\n" + json.dumps(row) + "\n")
        sys.stdout.flush()
        return 0

    names = args.models or MODELS
    meta = {"command": script_command("coverage.py", sys.argv[1:]), "size": args.size, "timeout_s": args.timeout,
            "date": timestamp(),
            "versions": versions(), "settings": {**SETTINGS, "steps": STEPS, "tolerance": TOLERANCE}}
    rows = []
    for requested, name in resolve_names(names):
        size = input_size(name, args.size)
        print(f"[{len(rows) + 1}/{len(names)}] {name} (S={size}) ...", end=" ", flush=True)
        row = run_child(name, size, args.timeout)
        row["family"] = family_of(name)
        if requested != name:
            row["requested"] = requested
        rows.append(row)
        extra = _note(row)
        print(f"{row['status']} in {row['seconds']:.0f} s" + (f" - {extra}" if extra else ""), flush=True)
        write_outputs(args.out, rows, meta)  # after every model: a partial run still leaves results
    print(summary_line(summarize(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
