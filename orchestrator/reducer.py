"""The pure, total reducer: ``state = fold(reduce, events)``.

It never raises and never lets an unknown, repeated or out-of-order event corrupt state: an event that does not
apply to the current state (a job exit for a job never requested, a second result for a finished trial) is
ignored, so replaying any prefix of any log is safe.
"""

from __future__ import annotations

from functools import reduce as _fold
from typing import Any, Iterable, TypeVar

from immutables import Map

from orchestrator import events as ev
from orchestrator.state import EMPTY, JobState, SweepState, TrialState, freeze

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


def _mark(index: Map, key: object, present: bool) -> Map:
    if present:
        return index.set(key, None)
    return index.delete(key) if key in index else index


def _put_trial(state: SweepState, trial: TrialState) -> SweepState:
    open_trials = _mark(state.open_trials, trial.trial, not trial.terminal)
    return _evolve(state, trials=state.trials.set(trial.trial, trial), open_trials=open_trials)


def _put_job(state: SweepState, job: JobState) -> SweepState:
    running = _mark(state.running_jobs, job.key, job.active)
    return _evolve(state, jobs=state.jobs.set(job.key, job), running_jobs=running)


def _sweep_created(state: SweepState, e: ev.SweepCreated) -> SweepState | None:
    if state.sweep is not None:
        return None
    return _evolve(state, sweep=e.sweep, config=freeze(e.config), created_at=e.ts)


def _sweep_resumed(state: SweepState, e: ev.SweepResumed) -> SweepState | None:
    if state.sweep is None:
        return None
    config = freeze(e.config) if e.config is not None else state.config
    # A finished sweep resumed with a larger max_trials is open again: that is how a sweep is extended.
    finished = state.finished and (e.config is None or config.get("max_trials", 0) <= len(state.trials))
    return _evolve(state, resumes=state.resumes + 1, config=config, finished=finished)


def _trial_suggested(state: SweepState, e: ev.TrialSuggested) -> SweepState | None:
    # Numbering is gap-free: only the next number is accepted.
    if e.trial != state.next_trial or state.finished:
        return None
    return _put_trial(state, TrialState(e.trial, e.run, freeze(e.params), freeze(e.info), suggested_at=e.ts))


def _job_requested(state: SweepState, e: ev.JobRequested) -> SweepState | None:
    trial = state.trials.get(e.trial)
    if trial is None or trial.terminal or e.key in state.jobs:
        return None
    job = JobState(e.key, e.trial, e.kind, e.attempt, tuple(e.argv), e.dispatcher, requested_at=e.ts)
    status = "training" if e.kind == "train" else "evaluating"
    state = _put_job(state, job)
    return _put_trial(state, _evolve(trial, status=status, jobs=trial.jobs + (e.key,)))


def _job_submitted(state: SweepState, e: ev.JobSubmitted) -> SweepState | None:
    job = state.jobs.get(e.key)
    if job is None or job.status != "requested":
        return None
    return _put_job(state, _evolve(job, status="submitted", handle=freeze(e.handle)))


def _job_started(state: SweepState, e: ev.JobStarted) -> SweepState | None:
    job = state.jobs.get(e.key)
    if job is None or job.status == "exited":
        return None
    return _put_job(state, _evolve(job, status="running", started_at=job.started_at or e.ts))


def _job_progress(state: SweepState, e: ev.JobProgress) -> SweepState | None:
    job = state.jobs.get(e.key)
    if job is None or job.status == "exited":
        return None
    return _put_job(state, _evolve(job, step=e.step, total=e.total, sps=e.sps))


def _job_exited(state: SweepState, e: ev.JobExited) -> SweepState | None:
    job = state.jobs.get(e.key)
    if job is None or job.status == "exited":
        return None
    # An ended job needs neither its command line nor its handle again (both stay in the log): dropping them
    # keeps a long sweep's memory small.
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
    state = _put_job(state, job)
    trial = state.trials[job.trial]
    if job.kind == "train" and job.succeeded and not trial.terminal:
        state = _put_trial(state, _evolve(trial, status="training_done"))
    return state


def _trial_completed(state: SweepState, e: ev.TrialCompleted) -> SweepState | None:
    trial = state.trials.get(e.trial)
    if trial is None or trial.terminal:
        return None
    done = _evolve(trial, status="completed", score=e.score, cost=e.cost, metrics=freeze(e.metrics), ended_at=e.ts)
    return _put_trial(state, done)


def _trial_failed(state: SweepState, e: ev.TrialFailed) -> SweepState | None:
    trial = state.trials.get(e.trial)
    if trial is None or trial.terminal:
        return None
    return _put_trial(state, _evolve(trial, status="failed", reason=e.reason, ended_at=e.ts))


def _sweep_finished(state: SweepState, e: ev.SweepFinished) -> SweepState | None:
    if state.finished:
        return None
    return _evolve(state, finished=True, best_trial=e.best_trial)


_HANDLERS = {
    ev.SweepCreated: _sweep_created,
    ev.SweepResumed: _sweep_resumed,
    ev.TrialSuggested: _trial_suggested,
    ev.JobRequested: _job_requested,
    ev.JobSubmitted: _job_submitted,
    ev.JobStarted: _job_started,
    ev.JobProgress: _job_progress,
    ev.JobExited: _job_exited,
    ev.TrialCompleted: _trial_completed,
    ev.TrialFailed: _trial_failed,
    ev.SweepFinished: _sweep_finished,
}

