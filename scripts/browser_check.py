#!/usr/bin/env python
"""Real-browser check of the MLflow UI and optuna-dashboard on a sweep's store, with headless Chromium.

Runs `chex-tune pareto` (tags the front, draws the plot), starts `chex-tune ui`, renders the
experiment's runs page and a front member's run page in headless Chromium (Debian's `chromium`), and
checks that the sweep, all its trial runs and the `pareto` tag are shown. Then starts
`optuna-dashboard` on the store's `optuna.db` and checks that the sweep's study page names its
objectives (not "Objective 0") and that its trials page shows the selected trial's MLflow run id. Writes the
front plot and screenshots to --out, and prints a JSON summary; exits 1 if a check fails.

    python scripts/browser_check.py --experiment fashion_mnist_resnet18 [--store mlflow] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from chex_tune.tuning.track.runs import find_experiment, read_trials
from chex_tune.tuning.track.store import open_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, *, screenshot: Path | None = None) -> str:
    """The rendered DOM of ``url`` (JavaScript run for a virtual 20 s); optionally a PNG screenshot too."""
    if CHROMIUM is None:
        raise SystemExit("headless Chromium not found: sudo apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        flags = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--window-size=1400,1500"]
        if screenshot is not None:
            subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return visible_text(dom.stdout)


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def optuna_dashboard_pages(store: Path, study_name: str, port: int, out: Path) -> tuple[str, str]:
    """The rendered study page and trials page of ``study_name`` in optuna-dashboard (screenshot of the first)."""
    import optuna

    storage = f"sqlite:///{Path(store).resolve() / 'optuna.db'}"
    study_id = optuna.storages.RDBStorage(storage).get_study_id_from_name(study_name)
    dashboard = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    server = subprocess.Popen([dashboard, storage, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"
    try:
        wait_for(f"http://127.0.0.1:{port}/dashboard", 60, what="optuna-dashboard")
        study_page = chromium(base, screenshot=out / "optuna_dashboard.png")
        trials_page = chromium(f"{base}/trials")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return study_page, trials_page


def wait_for(url: str, seconds: float, *, what: str = "the MLflow UI") -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{what} did not answer at {url} within {seconds:.0f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--store", default="mlflow")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--optuna-port", type=int, default=8085)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "chex_tune.cli"]
    subprocess.run([*cli, "pareto", args.experiment, "--store", args.store, "--plot",
                    str(args.out / "pareto_front.png")], check=True, capture_output=True)
    client, _ = open_store(args.store)
    experiment = find_experiment(client, args.experiment)
    trials = read_trials(client, args.experiment)
    ui = subprocess.Popen([*cli, "ui", "--store", args.store, "--port", str(args.port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
                          start_new_session=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_for(base + "/", 90)
        runs_page = chromium(f"{base}/#/experiments/{experiment.experiment_id}/runs")
        front = trials.front[0]
        run_page = chromium(f"{base}/#/experiments/{experiment.experiment_id}/runs/{front['run_id']}",
                            screenshot=args.out / "mlflow_run_page.png")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # chex-tune ui and the MLflow server processes it started
        ui.wait(timeout=60)
    sweep = trials.sweeps[0]  # the newest
    study_page, trials_page = optuna_dashboard_pages(Path(args.store), sweep["name"], args.optuna_port, args.out)
    sweep_runs = [row for row in trials.rows if row.sweep == sweep["run_id"]]
    total_runs = len(trials.rows) + len(trials.sweeps)  # trials plus one parent run per sweep
    checks = {
        "sweeps shown on the runs page": all(s["name"] in runs_page for s in trials.sweeps),
        f"{total_runs} runs counted on the runs page": f"{total_runs} matching runs" in runs_page,
        "front member's run page shows its name": client.get_run(front["run_id"]).info.run_name in run_page,
        "front member's run page shows pareto : true": "pareto : true" in run_page,
        "front member's run page shows val_acc": "val_acc" in run_page,
        "optuna-dashboard names the objectives val_acc and macs": "val_acc" in study_page and "macs" in study_page
        and "Objective 0" not in study_page,
        "optuna-dashboard shows the selected trial's MLflow run id": "mlflow_run_id" in trials_page
        and any(row.run_id in trials_page for row in sweep_runs),
    }
    files = [str(args.out / name) for name in ("pareto_front.png", "mlflow_run_page.png", "optuna_dashboard.png")]
    print(json.dumps({"experiment": args.experiment, "checks": checks, "files": files}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
