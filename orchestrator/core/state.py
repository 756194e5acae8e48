"""Sweep state: immutable values folded from the event log.

The state holds what the next decision needs and no more, so a week-long sweep's memory stays flat: the trials in
flight (each with its jobs), the last ``RECENT_TRIALS`` ended trials (for tables and subscribers), the best trial
and the counts. Every older trial lives in the log, which :func:`orchestrator.history.ended_trials` reads back.
Trials in flight are kept in an ``immutables.Map`` (a persistent hash map), so an event costs O(log n).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from immutables import Map


class FrozenDict(dict):  # type: ignore[type-arg]
    """A read-only dict for event payloads (parameters, configs, results): it keeps their order, which a
    command line, a summary and a config dump should show as written, and it is hashable."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("state is immutable: build a new value instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))


EMPTY = FrozenDict()
RECENT_TRIALS = 50  # ended trials kept in state for tables and subscribers; the rest are in the log

TrialStatus = Literal["pending", "training", "training_done", "evaluating", "completed", "failed", "stopped"]
JobStatus = Literal["requested", "submitted", "running", "exited"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "stopped"})
MAX_CURVE = 64  # learning-curve points kept per trial in state (thinned evenly beyond; the log keeps all)


@dataclass(frozen=True)
class JobState:
    key: str
    trial: int
    kind: str
    attempt: int
    argv: tuple[str, ...]
    dispatcher: str
    status: JobStatus = "requested"
    handle: FrozenDict = EMPTY
    requested_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    step: float | None = None
    total: float | None = None
    sps: float | None = None
    exit_code: int | None = None
    result: Any = None
    error: str | None = None
    duration: float = 0.0

    @property
    def active(self) -> bool:
        return self.status != "exited"

    @property
    def succeeded(self) -> bool:
        return self.status == "exited" and self.exit_code == 0 and self.error is None


@dataclass(frozen=True)
class TrialState:
    trial: int
    run: str
    params: FrozenDict
    info: FrozenDict = EMPTY
    status: TrialStatus = "pending"
    jobs: tuple[JobState, ...] = ()  # every attempt of every job, in the order requested
    suggested_at: float = 0.0
    ended_at: float | None = None
    score: float | None = None
    cost: float | None = None
    metrics: FrozenDict = EMPTY
    reason: str | None = None
    # Early stopping: the learning curve from SWEEP_REPORT lines, as (step, score) with the best score so far,
    # the position the trial took at each rung it reached (see SweepState.rungs), and the stop decision.
    curve: tuple[tuple[float, float], ...] = ()
    best_reported: float | None = None
    reported_step: float | None = None
    rung_positions: tuple[int, ...] = ()
    stop_reason: str | None = None
    stop_step: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def jobs_of(self, kind: str) -> list[JobState]:
        return [j for j in self.jobs if j.kind == kind]

    def job(self, key: str) -> JobState | None:
        return next((j for j in reversed(self.jobs) if j.key == key), None)

    @property
    def spent(self) -> float:
        """Seconds its jobs ran (what a failed trial cost)."""
        return sum(j.duration for j in self.jobs)


@dataclass(frozen=True)
class SweepState:
    sweep: str | None = None
    config: FrozenDict = EMPTY
    created_at: float | None = None
    resumes: int = 0
    finished: bool = False
    events: int = 0
    numbered: int = 0  # trials suggested so far: numbers 1..numbered
    completed: int = 0
    failed: int = 0
    early_stopped: int = 0  # trials that ended "stopped"
    best: TrialState | None = None  # the best completed trial, by the sweep's goal
    open_trials: Map[int, TrialState] = Map()  # trial number -> TrialState, for trials not yet completed or failed
    recent: tuple[TrialState, ...] = ()  # the last RECENT_TRIALS ended trials, in the order they ended
    job_trials: Map[str, int] = Map()  # job key -> trial number, for every job of a trial in flight
    running_jobs: Map[str, None] = Map()  # job key -> None, for jobs not yet exited
    failure_streak: int = 0  # trials in a row (since the last completion or resume) that failed for one reason
    streak_reason: str | None = None  # that reason (orchestrator.failures.failure_key)
    stopped: str | None = None  # why the sweep stopped (SweepStopped), until it is resumed
    # Rung k (at grace_steps * reduction_factor**k) -> (trial, best score so far) in the order trials reached it.
    rungs: Map[int, tuple[tuple[int, float], ...]] = Map()

    @property
    def next_trial(self) -> int:
        return self.numbered + 1

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.early_stopped

    @property
    def best_trial(self) -> int | None:
        return self.best.trial if self.best is not None else None

    def trial(self, number: int) -> TrialState | None:
        """A trial in flight or among the recently ended ones (older trials are in the log only)."""
        found = self.open_trials.get(number)
        if found is None:
            found = next((t for t in reversed(self.recent) if t.trial == number), None)
        return found

    def job(self, key: str) -> JobState | None:
        """A job of a trial in flight."""
        number = self.job_trials.get(key)
        return None if number is None else self.open_trials[number].job(key)

    def open_trial_list(self) -> list[TrialState]:
        return [self.open_trials[i] for i in sorted(self.open_trials)]

    def shown_trials(self) -> list[TrialState]:
        """The recently ended trials and those in flight, by number: what tables show."""
        return sorted([*self.recent, *self.open_trials.values()], key=lambda t: t.trial)

    def active_jobs(self) -> list[JobState]:
        return [j for j in map(self.job, self.running_jobs) if j is not None]


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data so state stays hashable and immune to aliasing."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def ordered_params(trial: TrialState, names: Any) -> dict[str, Any]:
    """A trial's parameters in the sweep's own order (``names``), whatever order the optimizer gave them in."""
    params = thaw(trial.params)
    ordered = {name: params[name] for name in names if name in params}
    return {**ordered, **params}


def thaw(value: Any) -> Any:
    """Back to plain dicts and lists (for JSON, the optimizer and display)."""
    if isinstance(value, (dict, Map)):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
