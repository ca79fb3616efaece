"""``chex-tune pareto EXPERIMENT``: the Pareto front of a sweep's trials, tagged in MLflow and plotted."""

from __future__ import annotations

import argparse
import csv
import io
import json
import pathlib
import re
import shutil
import sys
import tempfile

from chex_tune.cli._tables import COLUMNS, markdown, metric_cells, searched_names, short

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
    parser.add_argument("--store", default="mlflow", metavar="DIR", help="the local store a sweep wrote")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow server (default: MLFLOW_TRACKING_URI, "
                                                              "else the store's database)")


def run(args: argparse.Namespace) -> int:
    from chex_tune.cli._logging import configure
    from chex_tune.tuning.runs import open_store, read_trials, sweep_objectives, tag_front

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
    from chex_tune.tuning.objectives import cost_objective, quality_objective
    from chex_tune.tuning.plots import plot_pareto

    cost = cost_objective(trials.objectives)
    x = cost.name if cost is not None else "macs"
    y = quality_objective(trials.objectives).name if len(trials.objectives) > 1 or cost is None else "val_acc"
    path.parent.mkdir(parents=True, exist_ok=True)
    failed = sum(row["status"] == "FAILED" for row in trials.rows)
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


# ------------------------------------------------------------------------------------ output
def metric_columns(trials) -> list[str]:
    """The shared columns some finished trial has, then objectives of the user's own (e.g. val_loss)."""
    logged = {name for row in trials.finished for name in row["metrics"]}
    shown = [key for key, _, _ in COLUMNS if key in logged or key in {o.name for o in trials.objectives}]
    return shown + [o.name for o in trials.objectives if o.name not in shown]


def front_records(trials) -> list[dict]:
    """One flat record per front member, cheapest first."""
    searched = searched_names(trials.rows)
    names = {s["run_id"]: s["name"] for s in trials.sweeps}
    return [{"run_id": row["run_id"], "sweep": names.get(row["sweep"], row["sweep"]), "trial": row["number"],
             **{key: row["metrics"].get(key) for key in metric_columns(trials)},
             **{name: row["params"].get(name) for name in searched}} for row in trials.front]


def render(trials, style: str) -> str:
    records = front_records(trials)
    if style == "json":
        return json.dumps({"experiment": trials.experiment, "objectives": [str(o) for o in trials.objectives],
                           "sweeps": trials.sweeps, "finished": len(trials.finished), "stopped": len(trials.stopped),
                           "hypervolume": hypervolume(trials), "front": records}, indent=1)
    if style == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["run_id", "sweep", "trial", *metric_columns(trials),
                                                 *searched_names(trials.rows)], lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    return table(trials, records)


def table(trials, records: list[dict]) -> str:
    """The front as a Markdown table, cheapest first (the sweep command's style)."""
    searched = searched_names(trials.rows)
    several = len(trials.sweeps) > 1
    columns = metric_columns(trials)
    titles = {key: title for key, title, _ in COLUMNS}
    header = [*(["sweep"] if several else []), "trial", *[titles.get(c, c) for c in columns], *searched, "run id"]
    body = [[*([record["sweep"]] if several else []), str(record["trial"]), *cells(record, columns),
             *[short(record[name]) for name in searched], record["run_id"]] for record in records]
    lines = markdown(header, body)
    failed = sum(row["status"] == "FAILED" for row in trials.rows)
    stopped = len(trials.stopped)
    treated = "ranked on their last epoch" if any(row["rank"] >= 0 for row in trials.stopped) else \
        "not on the front; --include-stopped ranks them"
    lines.append(f"\n{len(records)} of {len(trials.finished)} finished trials on the Pareto front of "
                 f"{trials.experiment!r} ({', '.join(map(str, trials.objectives))}); failed trials: {failed}"
                 f"{f'; stopped early: {stopped} ({treated})' if stopped else ''}")
    volume = hypervolume(trials)
    if volume is not None:
        lines.append(f"hypervolume {volume:.4g} (reference: the worst of each objective among the finished trials)")
    return "\n".join(lines)


def cells(record: dict, columns: list[str]) -> list[str]:
    """The shared columns in the sweep table's style; a user's own metrics to 4 significant digits."""
    from chex_tune.tuning.objectives import format_metric

    styled = dict(zip([key for key, _, _ in COLUMNS], metric_cells(record)))
    return [styled[c] if c in styled else format_metric(c, record.get(c)) for c in columns]


def hypervolume(trials) -> float | None:
    """For two objectives only; the reference moves with the trials (see pareto.hypervolume_2d)."""
    from chex_tune.tuning.pareto import hypervolume_2d

    if len(trials.objectives) != 2:
        return None
    points = [[row["metrics"].get(o.name, float("nan")) for o in trials.objectives] for row in trials.finished]
    return hypervolume_2d(points, [o.mode == "max" for o in trials.objectives])
