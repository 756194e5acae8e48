"""The pure, total reducer: ``state = fold(reduce, events)``.

It never raises and never lets an unknown, repeated or out-of-order event corrupt state: an event that does not
apply to the current state (a job exit for a job never requested, a second result for a finished trial) is
ignored, so replaying any prefix of any log is safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import reduce as _fold
from typing import Any, TypeVar

from immutables import Map

from orchestrator.core import events as ev
from orchestrator.core.contract import report_score
from orchestrator.core.early_stopping import rung_of, settings_of
from orchestrator.core.failures import failure_key
from orchestrator.core.state import EMPTY, MAX_CURVE, RECENT_TRIALS, JobState, SweepState, TrialState, freeze

_T = TypeVar("_T")


def _evolve(obj: _T, **changes: Any) -> _T:
    """``dataclasses.replace`` for the frozen state classes, without re-running ``__init__``: a copy of the
    instance's fields with ``changes`` applied (a new object; ``obj`` is untouched). The reducer calls it a few
    times per event, where ``replace`` alone cost more than the rest of the fold."""
    new = object.__new__(type(obj))
    fields = new.__dict__
    fields.update(obj.__dict__)
    fields.update(changes)
    return new


def fold(events: Iterable[ev.Event], state: SweepState | None = None) -> SweepState:
    return _fold(reduce, events, state or SweepState())


def reduce(state: SweepState, event: ev.Event) -> SweepState:
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return _evolve(state, events=state.events + 1)
    try:
        new = handler(state, event)
    except Exception:  # noqa: BLE001 - totality: a malformed event must not kill the fold
        new = None
    if new is None or new is state:
        return _evolve(state, events=state.events + 1)
    new.__dict__["events"] = state.events + 1  # a copy the handler just made, seen by no one yet: no second copy
    return new


def _mark(index: Map[Any, Any], key: object, value: object) -> Map[Any, Any]:
    """``index`` with ``key`` set to ``value``, or removed when ``value`` is None."""
    if value is not None:
        return index.set(key, value)
    return index.delete(key) if key in index else index


def _put_trial(state: SweepState, trial: TrialState) -> SweepState:
    """An open trial changed (a new one, a new status or one of its jobs)."""
    return _evolve(state, open_trials=state.open_trials.set(trial.trial, trial))


def _put_job(state: SweepState, trial: TrialState, job: JobState, **trial_changes: Any) -> SweepState:
    """``job`` (new or changed) into its trial, which is open; ``trial_changes`` too. One copy of each."""
    known = job.key in state.job_trials
    jobs = tuple(job if j.key == job.key else j for j in trial.jobs) if known else (*trial.jobs, job)
    trial = _evolve(trial, jobs=jobs, **trial_changes)
    changes: dict[str, Any] = {"open_trials": state.open_trials.set(trial.trial, trial)}
    if not known:
        changes["job_trials"] = state.job_trials.set(job.key, trial.trial)
    if job.active != (job.key in state.running_jobs):
        changes["running_jobs"] = _mark(state.running_jobs, job.key, job.trial if job.active else None)
    return _evolve(state, **changes)


def _end_trial(state: SweepState, trial: TrialState) -> SweepState:
    """A trial completed or failed: it leaves the state's trials in flight for the short list of recent ones, and
    its jobs leave the job indexes. The log keeps all of it."""
    job_trials, running = state.job_trials, state.running_jobs
    for job in trial.jobs:
        job_trials = _mark(job_trials, job.key, None)
        running = _mark(running, job.key, None)
    completed = trial.status == "completed"
    best = state.best
    if completed and _better(trial, best, state.config):
        best = trial
    return _evolve(
        state,
        open_trials=state.open_trials.delete(trial.trial),
        recent=(*state.recent, trial)[-RECENT_TRIALS:],
        job_trials=job_trials,
        running_jobs=running,
        completed=state.completed + completed,
        failed=state.failed + (trial.status == "failed"),
        early_stopped=state.early_stopped + (trial.status == "stopped"),
        best=best,
    )


def _better(trial: TrialState, best: TrialState | None, config: Any) -> bool:
    score = trial.score
    if score is None or not math.isfinite(score):
        return False
    if best is None or best.score is None:
        return True
    goal = (config.get("protein_config") or {}).get("goal", "maximize")
    return score > best.score if goal != "minimize" else score < best.score  # ties: the earlier trial stays


def _open_job(state: SweepState, key: str) -> tuple[TrialState, JobState] | None:
    """The trial in flight and the job of ``key``, if that job has not exited."""
    number = state.running_jobs.get(key)
    if number is None:
        return None
    trial = state.open_trials[number]
    job = trial.job(key)
    return None if job is None else (trial, job)


def _sweep_created(state: SweepState, e: ev.SweepCreated) -> SweepState | None:
    if state.sweep is not None:
        return None
    return _evolve(state, sweep=e.sweep, config=freeze(e.config), created_at=e.ts)


def _sweep_resumed(state: SweepState, e: ev.SweepResumed) -> SweepState | None:
    if state.sweep is None:
        return None
    config = freeze(e.config) if e.config is not None else state.config
    # A finished sweep resumed with a larger max_trials is open again: that is how a sweep is extended.
    finished = state.finished and (e.config is None or config.get("max_trials", 0) <= state.numbered)
    # A resume is a fresh start for a stopped sweep: its cause may be fixed, so failures count from zero again.
    return _evolve(
        state,
        resumes=state.resumes + 1,
        config=config,
        finished=finished,
        stopped=None,
        failure_streak=0,
        streak_reason=None,
    )


def _trial_suggested(state: SweepState, e: ev.TrialSuggested) -> SweepState | None:
    # Numbering is gap-free: only the next number is accepted.
    if e.trial != state.next_trial or state.finished:
        return None
    state = _evolve(state, numbered=e.trial)
    return _put_trial(state, TrialState(e.trial, e.run, freeze(e.params), freeze(e.info), suggested_at=e.ts))


def _job_requested(state: SweepState, e: ev.JobRequested) -> SweepState | None:
    trial = state.open_trials.get(e.trial)
    if trial is None or e.key in state.job_trials:
        return None
    job = JobState(e.key, e.trial, e.kind, e.attempt, tuple(e.argv), e.dispatcher, requested_at=e.ts)
    return _put_job(state, trial, job, status="training" if e.kind == "train" else "evaluating")


def _job_submitted(state: SweepState, e: ev.JobSubmitted) -> SweepState | None:
    found = _open_job(state, e.key)
    if found is None or found[1].status != "requested":
        return None
    trial, job = found
    return _put_job(state, trial, _evolve(job, status="submitted", handle=freeze(e.handle)))


def _job_started(state: SweepState, e: ev.JobStarted) -> SweepState | None:
    found = _open_job(state, e.key)
    if found is None:
        return None
    trial, job = found
    return _put_job(state, trial, _evolve(job, status="running", started_at=job.started_at or e.ts))


def _job_progress(state: SweepState, e: ev.JobProgress) -> SweepState | None:
    found = _open_job(state, e.key)
    if found is None:
        return None
    trial, job = found
    return _put_job(state, trial, _evolve(job, step=e.step, total=e.total, sps=e.sps))


def _job_reported(state: SweepState, e: ev.JobReported) -> SweepState | None:
    """A learning-curve point of a train job: the curve, the best so far and the rungs it reached."""
    found = _open_job(state, e.key)
    if found is None or found[1].kind != "train":
        return None
    trial, job = found
    protein = state.config.get("protein_config") or {}
    score = report_score(e.values, protein.get("metric", "score"))
    if score is None or (trial.reported_step is not None and e.step <= trial.reported_step):
        return None
    minimize = protein.get("goal", "maximize") == "minimize"
    best = trial.best_reported
    if best is None or (score < best if minimize else score > best):
        best = score
    curve = (*trial.curve, (e.step, score))
    if len(curve) > MAX_CURVE:  # thin the older points evenly; the latest always stays
        curve = (*curve[:-1:2], curve[-1])
    rungs, positions = state.rungs, trial.rung_positions
    for k in range(len(positions), rung_of(e.step, settings_of(state.config)) + 1):
        arrived = rungs.get(k, ())
        positions = (*positions, len(arrived))
        rungs = rungs.set(k, (*arrived, (trial.trial, best)))
    changed = _evolve(
        trial, curve=curve, best_reported=best, reported_step=e.step, rung_positions=positions, metrics=freeze(e.values)
    )
    return _evolve(state, open_trials=state.open_trials.set(trial.trial, changed), rungs=rungs)


def _trial_stop_requested(state: SweepState, e: ev.TrialStopRequested) -> SweepState | None:
    trial = state.open_trials.get(e.trial)
    if trial is None or trial.stop_reason is not None:
        return None
    return _put_trial(state, _evolve(trial, stop_reason=e.reason, stop_step=e.step))


def _trial_stopped(state: SweepState, e: ev.TrialStopped) -> SweepState | None:
    trial = state.open_trials.get(e.trial)
    if trial is None:
        return None
    stopped = _evolve(
        trial, status="stopped", score=e.score, cost=e.cost, metrics=freeze(e.metrics), stop_step=e.step, ended_at=e.ts
    )
    return _end_trial(state, stopped)


def _job_exited(state: SweepState, e: ev.JobExited) -> SweepState | None:
    found = _open_job(state, e.key)
    if found is None:
        return None
    trial, job = found
    # An ended job needs neither its command line nor its handle again (both stay in the log): dropping them
    # keeps the state small.
    job = _evolve(
        job,
        status="exited",
        argv=(),
        handle=EMPTY,
        ended_at=e.ts,
        exit_code=e.exit_code,
        result=freeze(e.result),
        error=e.error,
        duration=e.duration,
    )
    if job.kind == "train" and job.succeeded:
        return _put_job(state, trial, job, status="training_done")
    return _put_job(state, trial, job)


def _trial_completed(state: SweepState, e: ev.TrialCompleted) -> SweepState | None:
    trial = state.open_trials.get(e.trial)
    if trial is None:
        return None
    done = _evolve(trial, status="completed", score=e.score, cost=e.cost, metrics=freeze(e.metrics), ended_at=e.ts)
    return _evolve(_end_trial(state, done), failure_streak=0, streak_reason=None)


def _trial_failed(state: SweepState, e: ev.TrialFailed) -> SweepState | None:
    trial = state.open_trials.get(e.trial)
    if trial is None:
        return None
    key = failure_key(e.reason)
    streak = state.failure_streak + 1 if key == state.streak_reason else 1
    ended = _end_trial(state, _evolve(trial, status="failed", reason=e.reason, ended_at=e.ts))
    return _evolve(ended, failure_streak=streak, streak_reason=key)


def _sweep_finished(state: SweepState, e: ev.SweepFinished) -> SweepState | None:
    # The best trial is the reducer's own record (the event's copy is for readers of the log).
    if state.finished:
        return None
    return _evolve(state, finished=True)


def _sweep_stopped(state: SweepState, e: ev.SweepStopped) -> SweepState | None:
    if state.finished or state.stopped is not None:
        return None
    return _evolve(state, stopped=e.reason)


_HANDLERS: dict[type[Any], Callable[[SweepState, Any], SweepState | None]] = {
    ev.SweepCreated: _sweep_created,
    ev.SweepResumed: _sweep_resumed,
    ev.TrialSuggested: _trial_suggested,
    ev.JobRequested: _job_requested,
    ev.JobSubmitted: _job_submitted,
    ev.JobStarted: _job_started,
    ev.JobProgress: _job_progress,
    ev.JobReported: _job_reported,
    ev.TrialStopRequested: _trial_stop_requested,
    ev.TrialStopped: _trial_stopped,
    ev.JobExited: _job_exited,
    ev.TrialCompleted: _trial_completed,
    ev.TrialFailed: _trial_failed,
    ev.SweepFinished: _sweep_finished,
    ev.SweepStopped: _sweep_stopped,
}
