"""``python -m orchestrator report --sweep X [--out FILE.html]``: the dashboard's views as one offline HTML file.

The page, its style, its script, plotly.js (as shipped inside the plotly Python package) and every trial are
inlined: the file opens from disk or an e-mail attachment with no network and no server. It works for a sweep in
any state; a sweep still running is shown as it stands when the report is written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator.core.config import ConfigError
from orchestrator.dashboard import page, plotly_js, static_file
from orchestrator.trials import TrialBook, iso, read_book, sweep_summary


def report_html(book: TrialBook) -> str:
    data = {"summary": sweep_summary(book.state, book.seq), "trials": book.records(), "generated_at": iso(time.time())}
    # Inside <script>, "</" could close the element early; "<\/" is the same string to JavaScript.
    payload = json.dumps(data).replace("</", "<\\/")
    head = "\n".join(
        [
            f"<style>\n{static_file('dashboard.css').decode()}\n</style>",
            f"<script>window.SWEEP_DATA = {payload};</script>",
            f"<script>{plotly_js().decode()}</script>",
            f"<script>{static_file('dashboard.js').decode()}</script>",
        ]
    )
    return page(head)


def write_report(db: Path, out: Path | None = None) -> Path:
    """Write the report of the sweep whose log is ``db``; returns where (default ``<sweep dir>/report.html``)."""
    out = out or db.parent / "report.html"
    html = report_html(read_book(db))
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out}: {exc.strerror or exc}; pick a writable path") from None
    return out
