"""What the service hands a dispatcher (JobSpec) and what a dispatcher reports back (JobUpdate).

Shared with ``dispatchers/`` so a plugin depends on this small vocabulary and nothing else of the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.events import JobKind


@dataclass(frozen=True)
class JobSpec:
    """One job to run. ``key`` is stable across restarts (``<run>.<kind>.<attempt>``): submitting the same key
    twice must never run the job twice."""

    key: str
    sweep: str
    run: str
    trial: int
    kind: JobKind
    attempt: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = field(default_factory=Path.cwd)
    log_dir: Path = Path("train_dir")
    timeout: float | None = None
    capture_output: bool = False
    dispatcher: str = "local"


def trial_label(trial: int) -> str:
    """``trial_0007``: how a trial is named in runs, logs and tables (the seed's format)."""
    return f"trial_{trial:04d}"


def run_name(sweep: str, trial: int) -> str:
    """``ppo_trial_0007``: the run of one trial, its job directory and W&B run name."""
    return f"{sweep}_{trial_label(trial)}"


def run_prefix(sweep: str) -> str:
    """What every run name of ``sweep`` starts with."""
    return f"{sweep}_trial_"


def job_key(run: str, kind: str, attempt: int) -> str:
    return f"{run}.{kind}.{attempt}"


@dataclass(frozen=True)
class JobHandle:
    """How a dispatcher finds its job again: JSON-able ``data`` (a pid, a SkyPilot job id, ...)."""

    key: str
    dispatcher: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class Progress:
    step: float
    total: float | None = None
    sps: float | None = None


@dataclass(frozen=True)
class Output:
    """A line the job printed (the service echoes it as ``[trial_0001] ...`` when capture_output is on)."""

    line: str


@dataclass(frozen=True)
class Report:
    """An intermediate result (``SWEEP_REPORT``): the job's own training ``step`` and its values (the score under
    ``score`` or the sweep's metric name, any other keys kept as metrics)."""

    step: float
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exited:
    exit_code: int | None
    result: dict[str, Any] | None = None
    duration: float = 0.0
    error: str | None = None


JobUpdate = Started | Progress | Report | Output | Exited
JOB_UPDATES = (Started, Progress, Report, Output, Exited)  # for isinstance checks
