"""``chex-tune pareto EXPERIMENT``: the Pareto front of a sweep's trials, tagged in MLflow and plotted."""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import sys
import tempfile

from chex_tune.cli._flags import add_store_flags

HELP = "print an experiment's Pareto front (cheapest first), tag its runs pareto=true and plot it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="MLflow experiment (a sweep's --experiment, default its space file name)")
    parser.add_argument("--objectives", help="e.g. val_loss:min,macs:min (default: the sweep's own, else "
                                             "val_acc:max,macs:min)")
    parser.add_argument("--sweep", metavar="RUN_ID", help="one sweep only: its parent run id or name (default: all)")
    parser.add_argument("--plot", metavar="PATH", help="PNG to draw (default: STORE/plots/EXPERIMENT-pareto.png)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="how to print the front")
    parser.add_argument("--include-stopped", action="store_true",
                        help="rank trials that early stopping stopped too, on their last epoch's metrics")
    add_store_flags(parser, "what a sweep wrote")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._logging import configure
    from chex_tune.tuning.tables import render
    from chex_tune.tuning.track.runs import read_trials, sweep_objectives, tag_front
    from chex_tune.tuning.track.store import open_store

    configure()
    client, _uri = open_store(args.store, args.tracking_uri)
    objectives = args.objectives or sweep_objectives(client, args.experiment, args.sweep)
    trials = read_trials(client, args.experiment, args.sweep, objectives, include_stopped=args.include_stopped)
    plot = pathlib.Path(args.plot) if args.plot else default_plot(args.store, args.experiment)
    draw(trials, plot)
    tagged = tag_front(client, trials.rows)
    log_plot(client, trials, plot)
    print(render(trials, args.format))
    # Machine-readable formats keep stdout to the data; what was done goes to stderr.
    notes = sys.stdout if args.format == "table" else sys.stderr
    print(f"\ntagged {tagged} finished runs pareto=true|false; plot: {plot} "
          f"(also pareto.png of {len(trials.sweeps)} sweep run(s))", file=notes)
    return 0


def default_plot(store: str, experiment: str) -> pathlib.Path:
    safe = re.sub(r"[^\w.-]+", "_", experiment)  # experiment names may hold '/' (e.g. /Users/me/sweep)
    return pathlib.Path(store) / "plots" / f"{safe}-pareto.png"


def draw(trials, path: pathlib.Path) -> None:
    from chex_tune.train.metrics import MACS, VAL_ACC
    from chex_tune.tuning.objectives import cost_objective, quality_objective
    from chex_tune.tuning.plots import plot_pareto

    cost = cost_objective(trials.objectives)
    x = cost.name if cost is not None else MACS
    y = quality_objective(trials.objectives).name if len(trials.objectives) > 1 or cost is None else VAL_ACC
    path.parent.mkdir(parents=True, exist_ok=True)
    failed = sum(row.status == "FAILED" for row in trials.rows)
    scope = trials.sweeps[0]["name"] if len(trials.sweeps) == 1 else f"{len(trials.sweeps)} sweeps"
    plot_pareto(trials.rows, path, x=x, y=y,
                title=f"{trials.experiment} ({scope})\n{len(trials.finished)} finished trials"
                      f"{f', {failed} failed' if failed else ''}")


def log_plot(client, trials, plot: pathlib.Path) -> None:
    """The plot as ``pareto.png`` on every sweep's parent run (log_artifact keeps the file's own name)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / "pareto.png"
        shutil.copyfile(plot, copy)
        for sweep in trials.sweeps:
            client.log_artifact(sweep["run_id"], str(copy))
