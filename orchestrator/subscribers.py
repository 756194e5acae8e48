"""Subscribers follow the committed event stream: the live log stream, the W&B mirror, attach clients.

The service calls ``publish`` right after each event is durable and folded into state. ``publish`` must return
at once (buffer and move on): a slow subscriber must never slow the sweep. Work that takes time happens in
``run``, which the service starts in its task group and cancels when it stops.

A subscriber that keeps its own record of how far it got (the W&B mirror's cursor) may also define
``catch_up_from() -> int | None``: at start-up the service then hands it, through ``publish``, every logged event
after that seq as it replays the log, so what it missed while the service was down reaches it too.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.core.events import StoredEvent
from orchestrator.core.state import SweepState


class Subscriber(Protocol):
    def publish(self, stored: StoredEvent, state: SweepState) -> None: ...

    async def run(self) -> None: ...
