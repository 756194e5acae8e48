"""The Store protocol: the sweep's durable, append-only event log plus the lease that keeps one service per sweep.

Methods are synchronous; the service calls them from worker threads (``anyio.to_thread``) so a slow disk never
blocks the event loop. ``append`` returns only after the events are durable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from orchestrator.core.events import Event, StoredEvent


class LeaseHeld(Exception):
    """Another live service holds this sweep."""


class StoreError(Exception):
    """The store cannot go on (damaged, read-only, disk full). The message says what happened and what to do; the
    command line prints it alone and exits with ``exit_code``."""

    exit_code = 4

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind  # "damaged", "read-only", "disk full", "lost" or "other"


def disk_full(what: str, detail: str) -> StoreError:
    """The one message for a full disk, whichever write of the sweep hit it first."""
    return StoreError(
        f"disk full: cannot {what} ({detail}); the committed log is intact. "
        "Free some space, then run the same command again to resume the sweep.",
        "disk full",
    )


class Store(Protocol):
    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Durably append, in order; returns them with their sequence numbers."""
        ...

    def read(self, since: int = 0) -> Iterator[StoredEvent]:
        """Events with seq > since, in order."""
        ...

    def last_seq(self) -> int: ...

    def acquire_lease(self, owner: str) -> None:
        """Take the sweep for this process or raise LeaseHeld naming the holder."""
        ...

    def release_lease(self) -> None: ...

    def checkpoint(self) -> None:
        """Make the log whole in its durable form (SQLite: fold the WAL into the database file), so a copy of the
        store's file holds every event. Called when the service stops."""
        ...

    def close(self) -> None: ...
