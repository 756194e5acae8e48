"""``status --format csv|json``: every trial of a sweep as a table for pandas and spreadsheets.

One row per trial, by number; one column per parameter path (``param:<path>`` would clash with nothing, but the
plain path is what people type in pandas, so it is used as is), then score, cost, status, reason and timings.
Missing values are empty cells in CSV and null in JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.trials import TrialBook, parameter_space, read_book

FIRST = ["trial", "run", "status"]
LAST = [
    "score",
    "cost",
    "reason",
    "stop_step",
    "source",
    "suggested_at",
    "started_at",
    "ended_at",
    "train_seconds",
    "eval_seconds",
]


def table(book: TrialBook) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): the sweep's own parameter order first, then any other path a trial had."""
    records = book.records()
    names = list(_params_in_order(book, records))
    rows = [
        {**{k: r[k] for k in FIRST}, **{n: r["params"].get(n) for n in names}, **{k: r[k] for k in LAST}}
        for r in records
    ]
    return [*FIRST, *names, *LAST], rows


def _params_in_order(book: TrialBook, records: Iterable[dict[str, Any]]) -> dict[str, None]:
    names = dict.fromkeys(parameter_space(book.state))
    for r in records:
        names.update(dict.fromkeys(r["params"]))
    return names


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1, allow_nan=False) + "\n"


def export(db: Path, fmt: str) -> str:
    """The sweep whose log is ``db`` as CSV or JSON text."""
    return render(read_book(db), fmt)


def render(book: TrialBook, fmt: str) -> str:
    columns, rows = table(book)
    if fmt == "csv":
        return to_csv(columns, rows)
    return to_json([{k: _json_safe(v) for k, v in row.items()} for row in rows])


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
