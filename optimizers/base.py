"""The optimizer interface the service talks to.

An optimizer is pure computation: given everything observed so far and the points still in flight, it proposes
the next hyperparameters. It holds no I/O and no event loop, so the service can run it in a worker thread and a
restarted service can rebuild it from the event log alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Observation:
    """A finished trial: its parameters, its score (None when it failed) and what it cost."""

    params: dict[str, Any]
    score: float | None
    cost: float
    failed: bool = False


@dataclass(frozen=True)
class Suggestion:
    """Proposed parameters plus what the optimizer wants on the record (predictions, fallback reasons)."""

    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


class Optimizer(Protocol):
    def suggest(
        self, observations: Sequence[Observation], pending: Sequence[dict[str, Any]], n: int = 1
    ) -> list[Suggestion]:
        """Propose ``n`` parameter sets, distinct from each other and from ``pending`` (trials in flight)."""
        ...
