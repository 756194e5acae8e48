"""Every trial of a sweep as plain records, kept current by folding the log incrementally.

The sweep state keeps only the trials in flight and the last few that ended; a dashboard, a report or an export
needs all of them. A ``TrialBook`` folds the log once (``add``) and then only the events appended since, so a page
that asks again after each new event costs a read of those events, not a replay. Each record carries ``seq``, the
last event that touched its trial: ``changed_since(seq)`` is what a live page fetches after the stream tells it
something happened.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.reducer import reduce
from orchestrator.core.state import SweepState, TrialState, thaw

CURVE_POINTS = 300  # progress points kept per job in flight (older halves are thinned out)


@dataclass
class TrialBook:
    state: SweepState = field(default_factory=SweepState)
    seq: int = 0  # the last event folded
    ended: dict[int, TrialState] = field(default_factory=dict)  # trial number -> the trial as it ended
    touched: dict[int, int] = field(default_factory=dict)  # trial number -> seq of the last event about it
    curves: dict[int, tuple[str, list[list[float]]]] = field(default_factory=dict)  # open trial -> its job's
    # progress, [[seconds since the job started, step, total]]
    reports: dict[int, list[list[float]]] = field(default_factory=dict)  # open trial -> [[step, score]]

    def add(self, stored: Iterable[ev.StoredEvent]) -> None:
        for s in stored:
            if s.seq <= self.seq:
                continue
            before, event = self.state, s.event
            after = reduce(before, event)
            number = getattr(event, "trial", None)
            key = getattr(event, "key", None)
            if number is None and isinstance(key, str):
                number = before.job_trials.get(key)
            if number is not None:
                self.touched[number] = s.seq
            if after.ended > before.ended:
                done = after.recent[-1]
                self.ended[done.trial] = done
                self.curves.pop(done.trial, None)
                self.reports.pop(done.trial, None)
            elif number is not None and number in after.open_trials:
                self._learning_curve(after, number, event)
            self.state, self.seq = after, s.seq

    def _learning_curve(self, state: SweepState, number: int, event: ev.Event) -> None:
        """Progress lines, and intermediate reports (any job event with a step and a score), of a trial in flight."""
        if isinstance(event, ev.JobProgress):
            job = state.job(event.key)
            if job is None:
                return
            key, curve = self.curves.get(number, ("", []))
            if key != job.key:  # a new job (eval after train, a retry): its own curve
                key, curve = job.key, []
                self.curves[number] = (key, curve)
            start = job.started_at or job.requested_at
            _bounded_append(curve, [round(event.ts - start, 3), event.step, event.total])
        elif isinstance(event, ev.JobReported):
            points = state.open_trials[number].curve
            if points and points[-1][0] == event.step:  # a report the reducer took (it has a score)
                _bounded_append(self.reports.setdefault(number, []), list(points[-1]))
        else:
            step, score = getattr(event, "step", None), getattr(event, "score", None)
            if isinstance(step, (int, float)) and isinstance(score, (int, float)):
                _bounded_append(self.reports.setdefault(number, []), [step, score])

    def trials(self) -> list[TrialState]:
        """Every trial, ended or in flight, by number."""
        found = {**self.ended, **dict(self.state.open_trials.items())}
        return [found[n] for n in sorted(found)]

    def records(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        trials = self.trials()
        end = None if limit is None else offset + limit
        return [self.record(t) for t in trials[offset:end]]

    def changed_since(self, seq: int) -> list[dict[str, Any]]:
        numbers = sorted(n for n, s in self.touched.items() if s > seq)
        found = [self.ended.get(n) or self.state.open_trials.get(n) for n in numbers]
        return [self.record(t) for t in found if t is not None]

    def record(self, trial: TrialState) -> dict[str, Any]:
        row = trial_record(trial)
        row["seq"] = self.touched.get(trial.trial, 0)
        if not trial.terminal:
            row["curve"] = self.curves.get(trial.trial, ("", []))[1]
            row["reports"] = self.reports.get(trial.trial, [])
            row["job"] = trial.jobs[-1].kind if trial.jobs else None
        return row


def _bounded_append(points: list[list[float]], point: list[Any]) -> None:
    points.append(point)
    if len(points) > CURVE_POINTS:
        del points[1:-1:2]  # keep the first and last points, thin the rest


def read_book(db: Path) -> TrialBook:
    """Every trial of the sweep whose log is ``db`` (a SQLite event log)."""
    from stores.factory import open_store

    store = open_store(db)
    try:
        book = TrialBook()
        book.add(store.read(0))
    finally:
        store.close()
    return book


def trial_record(trial: TrialState) -> dict[str, Any]:
    """One trial as plain JSON: parameters (by dotted path), outcome and timings (UTC, ISO 8601; seconds)."""
    started = [j.started_at for j in trial.jobs if j.started_at is not None]
    return {
        "trial": trial.trial,
        "run": trial.run,
        "status": trial.status,
        "params": flat_params(thaw(trial.params)),
        "score": _finite(trial.score),
        "cost": _finite(trial.cost),
        "reason": trial.reason or trial.stop_reason,  # a stopped trial's: why it was stopped
        "stop_step": _finite(trial.stop_step) if trial.status == "stopped" else None,
        "source": trial.info.get("source"),
        "suggested_at": iso(trial.suggested_at),
        "started_at": iso(min(started)) if started else None,
        "ended_at": iso(trial.ended_at),
        "train_seconds": round(sum(j.duration for j in trial.jobs_of("train")), 3),
        "eval_seconds": round(sum(j.duration for j in trial.jobs_of("eval")), 3),
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: one entry per parameter path."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{path}."))
        else:
            out[path] = value
    return out


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parameter_space(state: SweepState) -> dict[str, dict[str, Any]]:
    """The sweep's parameters by path, each with its distribution and bounds (what charts need for their axes)."""
    config = thaw(state.config)
    space = ((config.get("protein_config") or {}).get("parameters")) or {}
    return flat_space(space)


def flat_space(space: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in space.items():
        if not isinstance(value, dict):
            continue
        path = f"{prefix}{key}"
        if "distribution" in value:
            out[path] = value
        else:
            out.update(flat_space(value, f"{path}."))
    return out


def sweep_summary(state: SweepState, last_seq: int) -> dict[str, Any]:
    """The sweep as a page header needs it."""
    config = thaw(state.config)
    protein = config.get("protein_config") or {}
    return {
        "sweep": state.sweep,
        "last_seq": last_seq,
        "finished": state.finished,
        "trials_total": state.numbered,
        "max_trials": config.get("max_trials"),
        "completed": state.completed,
        "failed": state.failed,
        "stopped": state.early_stopped,
        "best_trial": state.best_trial,
        "metric": protein.get("metric", "score"),
        "goal": protein.get("goal", "maximize"),
        "parameters": parameter_space(state),
    }
