"""The job contract: how any training or eval program talks to the sweep, locally or on a cloud VM.

A job reports through its standard output, which every dispatcher already collects:

- progress, in the seed's form:  ``Epoch 2 / 743 sps / 2.62% of 50.00 ksteps``
- its result, once, as a tagged JSON line:  ``SWEEP_RESULT {"score": 0.93, "cost": 41.2, "metrics": {...}}``
  ``score`` may instead be given under the sweep's metric name (e.g. ``"evaluator/eval_arena/score"``);
  ``cost`` is optional (the service uses the train job's wall seconds when absent).

- intermediate results, any number of times, as ``SWEEP_REPORT {"step": 12000, "score": 0.41, ...}``: ``step``
  is the job's own training step and must increase from one report to the next; the score is under ``score`` or
  the sweep's metric name; other keys are kept as metrics. The same limits as a result apply. A report that breaks
  a rule (malformed, non-finite, no step, a step not above the last one) is ignored with a warning line: it never
  fails the job, since the job's result is what counts.

``report_result`` and ``report_intermediate`` print those lines for Python code; anything else can print them
by hand. ``ContractReader`` reads them back: every dispatcher feeds it the job's lines, so the rules are the
same wherever the job ran.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from orchestrator.core.jobs import Exited, JobUpdate, Output, Progress, Report

RESULT_TAG = "SWEEP_RESULT "
REPORT_TAG = "SWEEP_REPORT "
_PROGRESS = re.compile(
    r"Epoch\s+(?P<epoch>\d+)\s*/\s*(?P<sps>[\d.]+)\s*sps\s*/\s*(?P<pct>[\d.]+)%\s+of\s+(?P<total>[\d.]+)\s*(?P<unit>[kKMG]?)steps"
)
_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def format_progress(epoch: int, sps: float, step: float, total: float) -> str:
    pct = 100.0 * step / total if total else 0.0
    return f"Epoch {epoch} / {sps:.0f} sps / {pct:.2f}% of {total / 1e3:.2f} ksteps"


def parse_progress(line: str) -> tuple[float, float, float] | None:
    """``(step, total, sps)`` from a progress line, or None."""
    m = _PROGRESS.search(line)
    if not m:
        return None
    try:  # the pattern admits "1.2.3" and "."; a job's line is never worth an exception
        total = float(m["total"]) * _UNITS[m["unit"]]
        parsed = float(m["pct"]) / 100.0 * total, total, float(m["sps"])
    except ValueError:
        return None
    return parsed if all(math.isfinite(v) for v in parsed) else None


def report_result(result: dict[str, Any], stream: Any = None) -> None:
    """Print the result line (flushed, so a watcher sees it before the process exits)."""
    print(RESULT_TAG + json.dumps(result, default=str, allow_nan=True), file=stream or sys.stdout, flush=True)


def report_intermediate(step: float, score: float, stream: Any = None, **metrics: Any) -> None:
    """Print an intermediate result (``SWEEP_REPORT``) at the job's training ``step``; a sweep with early stopping
    may stop the job on it."""
    line = json.dumps({"step": step, "score": score, **metrics}, default=str, allow_nan=True)
    print(REPORT_TAG + line, file=stream or sys.stdout, flush=True)


MAX_RESULT_CHARS = 256 * 1024  # a result line longer than this is refused, not stored
MAX_METRICS = 1000  # keys in ``metrics``
_MAX_DEPTH = 32  # nesting of lists and objects anywhere in a result
_MAX_INT = 2**63  # an integer beyond this cannot be stored or mirrored faithfully


def _tagged_object(line: str, tag: str) -> dict[str, Any] | None:
    idx = line.find(tag)
    if idx < 0:
        return None
    text = line[idx + len(tag) :]
    name = tag.strip()
    if len(text) > MAX_RESULT_CHARS:
        raise ValueError(f"the {name} line holds {len(text)} characters, over the limit of {MAX_RESULT_CHARS}")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"the {name} line nests deeper than {_MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise ValueError(f"the {name} line must hold a JSON object, got {type(value).__name__}")
    return value


def parse_report_line(line: str) -> Report | None:
    """The intermediate result of a ``SWEEP_REPORT`` line; None for any other line, ValueError with the reason for
    one that breaks the rules (same limits as a result; ``step`` a finite number; values JSON data)."""
    value = _tagged_object(line, REPORT_TAG)
    if value is None:
        return None
    if "step" not in value:
        raise ValueError("the SWEEP_REPORT line has no 'step'")
    step = finite_number(value.pop("step"), "step")
    if len(value) > MAX_METRICS:
        raise ValueError(f"the SWEEP_REPORT line has {len(value)} values, over the limit of {MAX_METRICS}")
    if "score" in value:
        finite_number(value["score"], "score")
    _check_json(value, "report", 0)
    return Report(step, value)


def report_score(values: Any, metric: str) -> float | None:
    """The score of a report's values (under the metric name, else ``score``), or None if it holds no finite one."""
    for key in (metric, "score"):
        raw = values.get(key)
        if raw is not None:
            try:
                return finite_number(raw, key)
            except ValueError:
                return None
    return None


def parse_result_line(line: str) -> dict[str, Any] | None:
    """The result object from a tagged line; None for any other line.

    This is the boundary where a job's words become data: a line that is not valid JSON, not an object, too large,
    or holds a ``score``/``cost`` that is not a finite number or ``metrics`` that is not a bounded mapping, raises
    ValueError with the reason (the job then fails with it). Nothing else can come out of here.
    """
    value = _tagged_object(line, RESULT_TAG)
    return None if value is None else validate_result(value)


def validate_result(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` if it keeps the contract, else ValueError naming the field. Also used on results already in a
    log (written by an older version), so a bad one there fails its trial instead of the service."""
    if not isinstance(result, dict):
        raise ValueError(f"the result must be a JSON object, got {type(result).__name__}")
    for key in ("score", "cost"):
        if key in result:
            finite_number(result[key], key)
    metrics = result.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise ValueError(f"'metrics' must be a JSON object of name: value, got {type(metrics).__name__}")
        if len(metrics) > MAX_METRICS:
            raise ValueError(f"'metrics' has {len(metrics)} entries, over the limit of {MAX_METRICS}")
    _check_json(result, "result", 0)
    return result


def finite_number(raw: Any, field: str) -> float:
    """``raw`` as a float if it is a real, finite number (not a bool, not a string); ValueError otherwise."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"the reported {field} {_short(raw)} is not a number")
    try:
        number = float(raw)
    except OverflowError:
        raise ValueError(f"the reported {field} ({len(str(abs(raw)))} digits) is too large for a number") from None
    if not math.isfinite(number):
        raise ValueError(f"the reported {field} is {number}, not a finite number")
    return number


def _check_json(value: Any, where: str, depth: int) -> None:
    """Plain JSON data only (what json.loads makes), nested at most _MAX_DEPTH, integers within 64 bits."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where} nests deeper than {_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a key that is not a string: {_short(k)}")
            _check_json(k, f"a key in {where}", depth + 1)
            _check_json(v, f"{where}.{k}"[:200], depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]"[:200], depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -_MAX_INT <= value < _MAX_INT:
            raise ValueError(f"{where} is an integer of {len(str(abs(value)))} digits, beyond 64 bits")
    elif isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{where} is not UTF-8 text (a lone surrogate escape)") from None
    elif not (value is None or isinstance(value, (float, bool))):
        raise ValueError(f"{where} is a {type(value).__name__}, not JSON data")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def extract_score(result: dict[str, Any] | None, metric: str) -> float:
    """The trial's score from a job result; ValueError with a reason a person can act on otherwise."""
    if not result:
        raise ValueError("the eval job printed no SWEEP_RESULT line (see the job contract in README.md)")
    for key in (metric, "score"):
        if key in result:
            return finite_number(result[key], "score")
    raise ValueError(f"the result has neither {metric!r} nor 'score': keys are {sorted(result)[:20]}")


class ContractReader:
    """One job's output, read line by line into job updates: the same validation and limits for every dispatcher.

    ``read(line)`` gives the line as ``Output`` and, for a progress line, a ``Progress`` (every one: the service
    throttles what it logs). The result is the job's *last* ``SWEEP_RESULT`` line; it is validated once, when the
    job ends (``exited``): a last line that breaks the contract fails the job with the rule, even if an earlier
    line was valid. A stream read again from the start (a reopened cloud log) reads the same result again.
    """

    def __init__(self) -> None:
        self.result_line: str | None = None
        self.last_step = -math.inf  # of the last accepted report: steps must increase

    def read(self, line: str) -> list[JobUpdate]:
        updates: list[JobUpdate] = [Output(line)]
        if RESULT_TAG in line:
            self.result_line = line
        elif REPORT_TAG in line:
            updates += self._report(line)
        elif "Epoch" in line and (parsed := parse_progress(line)) is not None:
            updates.append(Progress(*parsed))
        return updates

    def _report(self, line: str) -> list[JobUpdate]:
        """The report, or a warning line saying why it was ignored (a bad report never fails the job)."""
        try:
            report = parse_report_line(line)
        except ValueError as exc:
            return [Output(f"warning: SWEEP_REPORT ignored: {exc}")]
        if report is None:
            return []
        if report.step <= self.last_step:
            return [
                Output(
                    f"warning: SWEEP_REPORT ignored: step {report.step:g} is not above the last ({self.last_step:g})"
                )
            ]
        self.last_step = report.step
        return [report]

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """The job's result (None if it printed none) and, if its result line breaks the contract, why."""
        if self.result_line is None:
            return None, None
        try:
            return parse_result_line(self.result_line), None
        except ValueError as exc:
            return None, f"malformed SWEEP_RESULT line: {exc}: {self.result_line.strip()[:300]}"

    def exited(self, exit_code: int | None, duration: float, error: str | None) -> Exited:
        """The job's end: its result, and the dispatcher's ``error`` joined with a result that broke the rules."""
        result, bad = self.result()
        if bad is not None:
            error = f"{error}; {bad}" if error else bad
        return Exited(exit_code=exit_code, result=result, duration=duration, error=error)
