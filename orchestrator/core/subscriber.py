"""Subscribers follow the committed event stream: the live log stream, the W&B mirror, attach clients.

The service calls ``publish`` right after each event is durable and folded into state. ``publish`` must return
at once (buffer and move on): a slow subscriber must never slow the sweep. Work that takes time happens in
``run``, which the service starts in its task group and cancels when it stops.

A subscriber that keeps its own record of how far it got (the W&B mirror's cursor) also overrides
``catch_up_from() -> int | None``: at start-up the service then hands it, through ``publish``, every logged event
after that seq as it replays the log, so what it missed while the service was down reaches it too. One that
buffers overrides ``drain``, which the service awaits (30 s at most) before it exits.
"""

from __future__ import annotations

from orchestrator.core.events import StoredEvent
from orchestrator.core.state import SweepState


class Subscriber:
    """The base of every subscriber: ``publish`` is required; the other hooks default to doing nothing."""

    def publish(self, stored: StoredEvent, state: SweepState) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Background work, in the service's task group; cancelled when the service stops."""

    def catch_up_from(self) -> int | None:
        """The seq after which this subscriber wants the logged events replayed to it at start-up; None: none."""
        return None

    async def drain(self) -> None:
        """Write out what is buffered, before the service exits."""
