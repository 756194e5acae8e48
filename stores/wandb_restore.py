"""Resume from W&B: read a sweep's group back from the W&B API and rebuild an event list a fresh local log can
start from (``events_from_wandb``), or write it into a new log (``restore_log_from_wandb``)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from orchestrator.core import events as ev
from orchestrator.core.jobs import run_name
from stores.wandb_client import RemoteRun, WandbClient
from stores.wandb_records import flatten


def _log() -> Any:
    """Bound at call time so it follows the service's logging configuration (the mirror's component name)."""
    return structlog.get_logger().bind(component="WandbMirror")


# -- resume from W&B ------------------------------------------------------------------------------------------

_UNFINISHED = ("pending", "training", "training_done", "evaluating")


def _trial_number(sweep: str, run: RemoteRun) -> int | None:
    value = run.summary.get("sweep/trial")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    m = re.fullmatch(re.escape(sweep) + r"_trial_(\d+)", run.id)
    return int(m.group(1)) if m else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _has_checkpoint(train_dir: Path, run: str) -> bool:
    path = train_dir / run / "checkpoints"
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def _eval_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in summary.items()
        if not k.startswith("_") and not k.startswith("sweep/") and not isinstance(v, dict)
    }


def events_from_wandb(
    settings: Any,
    sweep: str,
    train_dir: str | Path = "train_dir",
    *,
    client: WandbClient | None = None,
) -> list[ev.Event]:
    """Rebuild a sweep's event list from its W&B group, for a machine that has no local log.

    Returns ``[]`` when W&B has no run in the group. Otherwise: ``SweepCreated`` (definition from the sweep-level
    run's config; ``{}`` if that run is missing), then per trial in order ``TrialSuggested`` and its outcome:

    - completed (``sweep/score`` in the summary): ``TrialCompleted`` with score, cost and the eval metrics;
    - failed (``sweep/status`` failed, or nothing but a crashed/failed W&B state and no checkpoint): ``TrialFailed``;
    - unfinished (pending, training, evaluating; W&B shows it running, crashed or finished early): if
      ``train_dir/<run>/checkpoints`` holds a checkpoint, an exited train job (``JobRequested`` and
      ``JobExited(exit_code=0)``) so the scheduler evaluates it again; else ``TrialFailed``;
    - a trial number with no run at all (never mirrored): ``TrialFailed`` with empty params, so numbering stays
      gap-free;

    and ``SweepFinished`` if the sweep run says the sweep finished. Raises :class:`WandbError` (redacted) when W&B
    cannot be read.
    """
    train_dir = Path(train_dir)
    client = client or WandbClient("online", settings.project, getattr(settings, "entity", None), root=None)
    runs = client.group_runs(sweep)
    if not runs:
        return []
    sweep_run = next((r for r in runs if r.job_type == "sweep" or r.summary.get("sweep/kind") == "sweep"), None)
    if sweep_run is None:
        sweep_run = next((r for r in runs if r.id == sweep), None)
    trials: dict[int, RemoteRun] = {}
    for run in runs:
        if run is sweep_run:
            continue
        number = _trial_number(sweep, run)
        if number is not None and number not in trials:
            trials[number] = run

    now = time.time()
    definition = dict(sweep_run.config) if sweep_run is not None else {}
    created = _number(sweep_run.summary.get("sweep/created_at")) if sweep_run is not None else None
    out: list[ev.Event] = [ev.SweepCreated(sweep=sweep, config=definition, ts=created or now)]
    last = max(trials, default=0)
    for number in range(1, last + 1):
        trial_run = trials.get(number)
        if trial_run is None:
            name = run_name(sweep, number)
            out.append(ev.TrialSuggested(trial=number, run=name, params={}, info={"restored_from": "wandb"}))
            out.append(ev.TrialFailed(trial=number, reason="no W&B run for this trial (never mirrored)"))
            continue
        out.extend(_trial_events(number, trial_run, train_dir, now))
    if sweep_run is not None and sweep_run.summary.get("sweep/finished") is True:
        best = sweep_run.summary.get("sweep/best_trial")
        out.append(ev.SweepFinished(best_trial=int(best) if isinstance(best, (int, float)) else None))
    return out


def restore_log_from_wandb(
    settings: Any,
    sweep: str,
    store: Any,
    train_dir: str | Path = "train_dir",
    *,
    client: WandbClient | None = None,
) -> list[ev.StoredEvent]:
    """Fill an empty event log from W&B: ``events_from_wandb`` appended to ``store`` (a ``Store``).

    Does nothing and returns ``[]`` if the log already has events (the local log is the truth) or W&B has no run
    in the group. Raises :class:`WandbError` (redacted) when W&B cannot be read.
    """
    if store.last_seq() > 0:
        return []
    events = events_from_wandb(settings, sweep, train_dir, client=client)
    if not events:
        return []
    stored = store.append(events)
    _log().info(
        "rebuilt the sweep from W&B",
        sweep=sweep,
        events=len(stored),
        trials=sum(isinstance(e, ev.TrialSuggested) for e in events),
    )
    return stored


def _trial_events(number: int, run: RemoteRun, train_dir: Path, now: float) -> Iterable[ev.Event]:
    s = run.summary
    params = s.get("sweep/suggestion")
    if not isinstance(params, dict):
        params = flatten(run.config)
    info = dict(s.get("sweep/info") or {}) if isinstance(s.get("sweep/info"), dict) else {}
    info.update(restored_from="wandb", wandb_state=run.state)
    suggested = _number(s.get("sweep/suggested_at")) or now
    yield ev.TrialSuggested(trial=number, run=run.id, params=params, info=info, ts=suggested)

    status = s.get("sweep/status")
    score = _number(s.get("sweep/score"))
    ended = _number(s.get("sweep/ended_at")) or now
    if status == "stopped":  # stopped early: it stays stopped, at the step it reached
        stopped_at = _number(s.get("sweep/stopped_at_step")) or 0.0
        spent = _number(s.get("sweep/cost")) or 0.0
        yield ev.TrialStopped(trial=number, score=score, step=stopped_at, cost=spent, ts=ended)
        return
    if status != "failed" and score is not None:
        cost = _number(s.get("sweep/cost"))
        if cost is None:
            cost = _number(s.get("sweep/train_seconds")) or _number(s.get("_runtime")) or 0.0
        yield ev.TrialCompleted(trial=number, score=score, cost=cost, metrics=_eval_metrics(s), ts=ended)
        return
    if status == "failed":
        yield ev.TrialFailed(trial=number, reason=str(s.get("sweep/reason") or "failed (from W&B)"), ts=ended)
        return
    # Unfinished here: pending, training, evaluating, or a run W&B shows crashed/failed/running with no result.
    if _has_checkpoint(train_dir, run.id):
        attempts = s.get("sweep/attempts")
        attempt = int(attempts.get("train", 1)) if isinstance(attempts, dict) else 1
        key = f"{run.id}.train.{max(1, attempt)}"
        duration = _number(s.get("sweep/train_seconds")) or _number(s.get("_runtime")) or 0.0
        yield ev.JobRequested(
            key=key, trial=number, kind="train", attempt=max(1, attempt), argv=[], dispatcher="restored", ts=suggested
        )
        yield ev.JobExited(key=key, exit_code=0, duration=duration, ts=now)
        return
    where = train_dir / run.id / "checkpoints"
    yield ev.TrialFailed(
        trial=number,
        reason=f"W&B shows the run {run.state} with status {status or 'unknown'}, and no checkpoint at {where}",
        ts=now,
    )
