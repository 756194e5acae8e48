"""Why a trial failed, in one line: what summaries show and what tells a doomed sweep from bad luck.

A failed job's error is a status plus the last lines of its output (``exited with code 2; last output (<log>):``
then the quoted lines). The line that explains it is the job's own error line (``... error: override 'toy.nope'
...``, ``RuntimeError: ...``), usually the last quoted line mentioning an error. Pure: the reducer uses it.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from pathlib import Path

_ERROR_LINE = re.compile(r"error|exception|traceback|failed|denied|not found|no such", re.IGNORECASE)
_RUN_NUMBER = re.compile(r"trial_\d+")
_QUOTE_HEAD = re.compile(r";\s*last output \([^)]*\):\s*$|\s*\(it printed nothing; [^)]*\)\s*$")


def explain(reason: str) -> str:
    """The reason's first line without the log path, plus the job's line that explains it (if it quoted one)."""
    lines = reason.splitlines() or [""]
    head = _QUOTE_HEAD.sub("", lines[0]).rstrip(" ;:")
    quoted = [line.strip() for line in lines[1:] if line.strip()]
    if not quoted:
        return head
    errors = [line for line in quoted if _ERROR_LINE.search(line)]
    return f"{head}: {(errors or quoted)[-1]}"


def failure_key(reason: str) -> str:
    """Two trials failed "for the same reason" when their explanations match once run names are set aside."""
    return _RUN_NUMBER.sub("trial_N", explain(reason))


def clip(text: str, limit: int = 300) -> str:
    """``text`` within ``limit`` characters, keeping its end (where the job's error line is) over its start."""
    if len(text) <= limit:
        return text
    keep = limit - 5
    head = keep // 3
    return f"{text[:head]} ... {text[-(keep - head) :]}"


# -- building a failed job's reason (every dispatcher the same way: README's faulty-jobs table) -----------------

TAIL_LINES = 12  # output lines a failed job's reason quotes


def exit_status(code: int | None) -> str:
    """``exited with code 7``; a negative code is a job killed by that signal (Python's subprocess convention):
    ``killed by signal 9 (SIGKILL)``; None when no status is known."""
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exited with code {code}"


def quote_output(lines: Iterable[str], log: Path | str) -> str:
    """What a failed job's reason appends: its last lines (keep at most TAIL_LINES), or that it printed nothing."""
    lines = list(lines)
    if not lines:
        return f" (it printed nothing; {log})"
    body = "\n".join(f"    {line[:500]}" for line in lines)
    return f"; last output ({log}):\n{body}"


def timed_out(duration: float, limit: float | None, code: int | None) -> str:
    """``timed out after 2.0 s (limit 2 s); killed by signal 15 (SIGTERM)``."""
    shown = f"{limit:g}" if isinstance(limit, (int, float)) else str(limit)
    return f"timed out after {duration:.1f} s (limit {shown} s); {exit_status(code)}"
