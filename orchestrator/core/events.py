"""The sweep's vocabulary: every fact the service records is one of these events.

Events are immutable pydantic models tagged by ``type``; the store keeps them as JSON lines in order, each with
a sequence number. An event type the running code does not know (written by a newer version, say) loads as
``UnknownEvent`` so the reducer can skip it instead of failing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

JobKind = Literal["train", "eval"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    ts: float = Field(default_factory=time.time)


class SweepCreated(_Event):
    type: Literal["SweepCreated"] = "SweepCreated"
    sweep: str
    config: dict[str, Any]


class SweepResumed(_Event):
    """The service started again on an existing log; ``config`` is the definition now in force."""

    type: Literal["SweepResumed"] = "SweepResumed"
    sweep: str
    owner: str = ""
    config: dict[str, Any] | None = None


class TrialSuggested(_Event):
    type: Literal["TrialSuggested"] = "TrialSuggested"
    trial: int
    run: str
    params: dict[str, Any]
    info: dict[str, Any] = {}


class JobRequested(_Event):
    """Intent to run a job: durable before the dispatcher is called, keyed for idempotent submission."""

    type: Literal["JobRequested"] = "JobRequested"
    key: str
    trial: int
    kind: JobKind
    attempt: int = 1
    argv: list[str]
    dispatcher: str = "local"


class JobSubmitted(_Event):
    type: Literal["JobSubmitted"] = "JobSubmitted"
    key: str
    handle: dict[str, Any] = {}
    reattached: bool = False


class JobStarted(_Event):
    type: Literal["JobStarted"] = "JobStarted"
    key: str


class JobProgress(_Event):
    type: Literal["JobProgress"] = "JobProgress"
    key: str
    step: float
    total: float | None = None
    sps: float | None = None


class JobReported(_Event):
    """An intermediate result the job printed (``SWEEP_REPORT``), throttled per job like progress."""

    type: Literal["JobReported"] = "JobReported"
    key: str
    step: float
    values: dict[str, Any] = {}


class TrialStopRequested(_Event):
    """The early-stopping rule judged the trial poor at a rung: its train job is to be cancelled. Logged before the
    cancel, so a restart cancels it again if the job still runs."""

    type: Literal["TrialStopRequested"] = "TrialStopRequested"
    trial: int
    step: float
    reason: str


class TrialStopped(_Event):
    """A trial stopped early: its last reported ``score``, the ``step`` it reached and the ``cost`` it spent."""

    type: Literal["TrialStopped"] = "TrialStopped"
    trial: int
    score: float | None
    step: float
    cost: float
    metrics: dict[str, Any] = {}


class JobExited(_Event):
    """The job ended. ``result`` is what it reported (score, cost, metrics); ``error`` says why it failed."""

    type: Literal["JobExited"] = "JobExited"
    key: str
    exit_code: int | None
    result: dict[str, Any] | None = None
    duration: float = 0.0
    error: str | None = None


class TrialCompleted(_Event):
    type: Literal["TrialCompleted"] = "TrialCompleted"
    trial: int
    score: float
    cost: float
    metrics: dict[str, Any] = {}


class TrialFailed(_Event):
    type: Literal["TrialFailed"] = "TrialFailed"
    trial: int
    reason: str


class SweepFinished(_Event):
    type: Literal["SweepFinished"] = "SweepFinished"
    best_trial: int | None = None


class SweepStopped(_Event):
    """A doomed sweep: ``max_consecutive_failures`` trials in a row failed for the same reason. Nothing new is
    dispatched until the sweep is resumed (the next serve)."""

    type: Literal["SweepStopped"] = "SweepStopped"
    reason: str


class UnknownEvent(_Event):
    """A record this version cannot read; kept so nothing is lost, skipped by the reducer."""

    type: Literal["UnknownEvent"] = "UnknownEvent"
    raw: dict[str, Any] = {}


Event = Annotated[
    SweepCreated
    | SweepResumed
    | TrialSuggested
    | JobRequested
    | JobSubmitted
    | JobStarted
    | JobProgress
    | JobReported
    | TrialStopRequested
    | TrialStopped
    | JobExited
    | TrialCompleted
    | TrialFailed
    | SweepFinished
    | SweepStopped
    | UnknownEvent,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: its position (1-based, gap-free) and the event (already validated: a plain
    record, since replaying a long log builds one per event)."""

    seq: int
    event: Event

    def to_json(self) -> str:
        """``{"seq":N,"event":{...}}``, one line: how the stream carries it."""
        return f'{{"seq":{int(self.seq)},"event":{self.event.model_dump_json()}}}'


def event_to_json(event: _Event) -> str:
    return event.model_dump_json()


def event_from_json(text: str | bytes) -> Event:
    """Parse one record; anything unreadable becomes an UnknownEvent rather than an exception."""
    try:
        return _ADAPTER.validate_json(text)
    except ValidationError:
        import json

        try:
            raw = json.loads(text)
        except ValueError:
            raw = {"text": text if isinstance(text, str) else text.decode("utf-8", "replace")}
        return UnknownEvent(raw=raw if isinstance(raw, dict) else {"value": raw})


def event_from_dict(data: dict[str, Any]) -> Event:
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError:
        return UnknownEvent(raw=data)
