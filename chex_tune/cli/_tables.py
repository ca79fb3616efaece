"""Trial tables shared by ``chex-tune sweep`` and ``chex-tune pareto``: one column set, one number style."""

from __future__ import annotations

from chex_tune.units import format_count

COLUMNS = (("val_acc", "val acc", "{:.4f}"), ("test_acc", "test acc", "{:.4f}"), ("macs", "MACs", "count"),
           ("params", "params", "count"), ("latency_ms", "latency ms", "{:.3f}"))
METRIC_TITLES = [title for _, title, _ in COLUMNS]


def searched_names(rows: list[dict]) -> list[str]:
    """The CHEX parameters any of these trials searched, for the table's columns."""
    return sorted({name for row in rows for name in row["searched"]})


def metric_cells(metrics: dict) -> list[str]:
    cells = []
    for key, _, style in COLUMNS:
        value = metrics.get(key)
        cells.append("-" if value is None else format_count(value, ".2f") if style == "count" else style.format(value))
    return cells


def short(text) -> str:
    """A parameter as logged (a string), numbers to 4 significant digits."""
    if text is None:
        return "-"
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value:.4g}"


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
