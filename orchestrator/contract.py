"""The job contract: how any training or eval program talks to the sweep, locally or on a cloud VM.

A job reports through its standard output, which every dispatcher already collects:

- progress, in the seed's form:  ``Epoch 2 / 743 sps / 2.62% of 50.00 ksteps``
- its result, once, as a tagged JSON line:  ``SWEEP_RESULT {"score": 0.93, "cost": 41.2, "metrics": {...}}``
  ``score`` may instead be given under the sweep's metric name (e.g. ``"evaluator/eval_arena/score"``);
  ``cost`` is optional (the service uses the train job's wall seconds when absent).

``report_result`` prints that line for Python code; anything else can print it by hand.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

RESULT_TAG = "SWEEP_RESULT "
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
    total = float(m["total"]) * _UNITS[m["unit"]]
    return float(m["pct"]) / 100.0 * total, total, float(m["sps"])


def report_result(result: dict[str, Any], stream: Any = None) -> None:
    """Print the result line (flushed, so a watcher sees it before the process exits)."""
    print(RESULT_TAG + json.dumps(result, default=str, allow_nan=True), file=stream or sys.stdout, flush=True)


def parse_result_line(line: str) -> dict[str, Any] | None:
    """The result object from a tagged line; None for any other line. Malformed JSON raises ValueError."""
    idx = line.find(RESULT_TAG)
    if idx < 0:
        return None
    value = json.loads(line[idx + len(RESULT_TAG) :])
    if not isinstance(value, dict):
        raise ValueError(f"the SWEEP_RESULT line must hold a JSON object, got {type(value).__name__}")
    return value


def extract_score(result: dict[str, Any] | None, metric: str) -> float:
    """The trial's score from a job result; ValueError with a reason a person can act on otherwise."""
    if not result:
        raise ValueError("the eval job printed no SWEEP_RESULT line (see the job contract in README.md)")
    for key in (metric, "score"):
        if key in result:
            raw = result[key]
            break
    else:
        raise ValueError(f"the result has neither {metric!r} nor 'score': keys are {sorted(result)}")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"the reported score {raw!r} is not a number") from None
    if not math.isfinite(score):
        raise ValueError(f"the reported score is {score}, not a finite number")
    return score
