"""Trial tables: the sweep's table of all trials (the CLI's and ``SweepResult``'s) and the front as a table, CSV or
JSON (``chex-tune pareto``). One column set and one number style, read from the metric registry."""

from __future__ import annotations

import csv
import io
import json

from chex_tune.train.metrics import MACS, TABLE_COLUMNS, metric
from chex_tune.tuning.objectives import objectives_text


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def short(text) -> str:
    """A parameter as logged (a string), numbers to 4 significant digits."""
    if text is None:
        return "-"
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value:.4g}"


def searched_names(rows) -> list[str]:
    """The settings any of these trials searched, for the table's columns."""
    return sorted({name for row in rows for name in row.searched})


def parents(rows) -> dict[str, str] | None:
    """Each trial's parent as its trial number (an inheriting sweep's "from" column; "-": the trained start), or None
    when no trial inherited."""
    if not any(row.parent_run for row in rows):
        return None
    numbers = {row.run_id: str(row.number) for row in rows}
    return {row.run_id: numbers.get(row.parent_run, "?") if row.parent_run else "-" for row in rows}


def status(row) -> str:
    if row.beyond_max_drop:
        return f"{row.status} (beyond --max-drop)"
    return f"STOPPED @{row.stopped_at}" if row.stopped_at is not None else row.status


def beyond_text(rows) -> str:
    """The count of finished trials beyond --max-drop, as the tables' count lines say it ("" when none)."""
    beyond = sum(row.beyond_max_drop for row in rows)
    return f"; {beyond} trial{'s' if beyond != 1 else ''} beyond --max-drop (not on the front)" if beyond else ""


def trials_table(rows, objectives) -> str:
    """All trials as a Markdown table: the front first (starred), each part cheapest first; then a line of counts."""
    searched, parent = searched_names(rows), parents(rows)
    header = ["front", "trial", *(["from"] if parent else []), "status",
              *[metric(name).title for name in TABLE_COLUMNS], *searched, "run id"]
    order = sorted(rows, key=lambda r: (r.rank != 0, not r.finished, r.metrics.get(MACS, float("inf"))))
    lines = markdown(header, [["*" if row.rank == 0 else "", str(row.number), *([parent[row.run_id]] if parent else []),
                               status(row), *[metric(name).cell(row.metrics.get(name)) for name in TABLE_COLUMNS],
                               *[short(row.params.get(n)) for n in searched], row.run_id] for row in order])
    stopped = sum(row.stopped_at is not None for row in rows)
    lines.append(f"\n{sum(row.rank == 0 for row in rows)} of {len(rows)} trials on the Pareto front "
                 f"({objectives_text(objectives).replace(',', ', ')}); failed trials: "
                 f"{sum(r.status == 'FAILED' for r in rows)}" + (f"; stopped early: {stopped}" if stopped else "")
                 + beyond_text(rows))
    return "\n".join(lines)


def reference_line(label: str, metrics: dict) -> str:
    """One model that is not a trial (a family's trained start), in the table's columns and number style."""
    cells = ", ".join(f"{metric(name).title} {metric(name).cell(metrics[name]).strip()}" for name in TABLE_COLUMNS
                      if metrics.get(name) is not None)
    return f"{label}: {cells}"


def metric_columns(trials) -> list[str]:
    """The shared columns some finished trial has, then objectives of the user's own (e.g. val_loss)."""
    logged = {name for row in trials.finished for name in row.metrics}
    shown = [key for key in TABLE_COLUMNS if key in logged or key in {o.name for o in trials.objectives}]
    return shown + [o.name for o in trials.objectives if o.name not in shown]


def front_records(trials) -> list[dict]:
    """One flat record per front member, cheapest first."""
    searched = searched_names(trials.rows)
    names = {s["run_id"]: s["name"] for s in trials.sweeps}
    parent = parents(trials.rows)
    return [{"run_id": row.run_id, "sweep": names.get(row.sweep, row.sweep), "trial": row.number,
             **({"from": parent[row.run_id]} if parent else {}),
             **{key: row.metrics.get(key) for key in metric_columns(trials)},
             **{name: row.params.get(name) for name in searched}} for row in trials.front]


def render(trials, style: str) -> str:
    records = front_records(trials)
    if style == "json":
        return json.dumps({"experiment": trials.experiment, "objectives": [str(o) for o in trials.objectives],
                           "sweeps": trials.sweeps, "finished": len(trials.finished), "stopped": len(trials.stopped),
                           "beyond_max_drop": len(trials.beyond),
                           "hypervolume": hypervolume(trials), "front": records}, indent=1)
    if style == "csv":
        out = io.StringIO()
        fields = ["run_id", "sweep", "trial", *(["from"] if parents(trials.rows) else []), *metric_columns(trials),
                  *searched_names(trials.rows)]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    return table(trials, records)


def table(trials, records: list[dict]) -> str:
    """The front as a Markdown table, cheapest first (the sweep command's style)."""
    searched = searched_names(trials.rows)
    several = len(trials.sweeps) > 1
    columns = metric_columns(trials)
    inherit = any("from" in record for record in records)
    header = [*(["sweep"] if several else []), "trial", *(["from"] if inherit else []),
              *[metric(c).title for c in columns], *searched, "run id"]
    body = [[*([record["sweep"]] if several else []), str(record["trial"]), *([record["from"]] if inherit else []),
             *[cell(record, c) for c in columns],
             *[short(record[name]) for name in searched], record["run_id"]] for record in records]
    lines = markdown(header, body)
    failed = sum(row.status == "FAILED" for row in trials.rows)
    stopped = len(trials.stopped)
    treated = "ranked on their last epoch" if any(row.rank >= 0 for row in trials.stopped) else \
        "not on the front; --include-stopped ranks them"
    lines.append(f"\n{len(records)} of {len(trials.finished)} finished trials on the Pareto front of "
                 f"{trials.experiment!r} ({', '.join(map(str, trials.objectives))}); failed trials: {failed}"
                 f"{f'; stopped early: {stopped} ({treated})' if stopped else ''}{beyond_text(trials.rows)}")
    volume = hypervolume(trials)
    if volume is not None:
        within = " within --max-drop" if trials.beyond else ""
        lines.append(f"hypervolume {volume:.4g} (reference: the worst of each objective among the finished trials"
                     f"{within})")
    return "\n".join(lines)


def cell(record: dict, column: str) -> str:
    """A shared column in the sweep table's style; a user's own metric to 4 significant digits."""
    value = record.get(column)
    return metric(column).cell(value) if column in TABLE_COLUMNS else metric(column).text(value)


def hypervolume(trials) -> float | None:
    """For two objectives only, of the trials within --max-drop; the reference moves with the trials (see
    pareto.hypervolume_2d)."""
    from chex_tune.tuning.pareto import hypervolume_2d

    if len(trials.objectives) != 2:
        return None
    points = [[row.value(o.name) for o in trials.objectives] for row in trials.finished if not row.beyond_max_drop]
    return hypervolume_2d(points, [o.mode == "max" for o in trials.objectives])
