"""The event hub: fans the committed event stream out to any number of followers (HTTP stream clients).

``publish`` is called by the service right after an event is durable and folded; it only appends to per-client
bounded buffers and returns (a slow client can never slow the sweep). A client whose buffer overflows is marked
*lagging*: its buffer is dropped, it is told so, and it catches up from the log (the recent-events window in memory,
or the store in a worker thread) from the last sequence number it was given. Because sequence numbers are 1-based
and gap-free, a subscription is exactly "every event with seq > since, in order, once": replay and live events
meet at a seam where duplicates are dropped by seq and a gap is filled from the log.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import anyio

from orchestrator.core.events import StoredEvent
from orchestrator.core.state import SweepState
from orchestrator.core.subscriber import Subscriber

PAGE = 2000  # events per catch-up read (and per batch handed to a client)
RECENT = 4096  # events kept in memory so joining or lagging clients rarely touch the store
DEFAULT_BUFFER = int(os.environ.get("ORCHESTRATOR_HUB_BUFFER", "1024"))  # live events queued per client
KEEPALIVE_SECONDS = 10.0
DRAIN_SECONDS = 3.0  # at the end of a sweep, how long to wait for clients to receive the last event


class LogReader(Protocol):
    def read(self, since: int = 0) -> Iterator[StoredEvent]: ...


class Entry:
    """One published event plus its wire form, encoded once however many clients send it."""

    __slots__ = ("stored", "_sse")

    def __init__(self, stored: StoredEvent):
        self.stored = stored
        self._sse: bytes | None = None

    @property
    def seq(self) -> int:
        return self.stored.seq

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = f"id: {self.stored.seq}\ndata: {self.stored.to_json()}\n\n".encode()
        return self._sse


@dataclass(frozen=True)
class Lagging:
    """The client fell more than a buffer behind; it resumes from the log after ``since``."""

    since: int
    dropped: int


@dataclass(frozen=True)
class Keepalive:
    """Nothing happened for a while (lets the transport notice a dead peer)."""


Batch = list[Entry] | Lagging | Keepalive


class _Client:
    __slots__ = ("buffer", "limit", "lagging", "dropped", "wake")

    def __init__(self, limit: int):
        self.buffer: deque[Entry] = deque()
        self.limit = limit
        self.lagging = False
        self.dropped = 0
        self.wake = anyio.Event()

    def offer(self, entry: Entry) -> None:
        if len(self.buffer) >= self.limit:  # full: drop it all; the client catches up from the log
            self.dropped += len(self.buffer)
            self.buffer.clear()
            self.lagging = True
        self.buffer.append(entry)
        if not self.wake.is_set():
            self.wake.set()


class EventHub(Subscriber):
    """A Subscriber that serves the event stream to many followers; see the module docstring."""

    def __init__(self, reader: LogReader, buffer_size: int = DEFAULT_BUFFER, keepalive: float = KEEPALIVE_SECONDS):
        self.reader = reader
        self.buffer_size = max(1, buffer_size)
        self.keepalive = keepalive
        self.state = SweepState()
        self.last_seq = 0  # last event published by the service
        self.final_seq: int | None = None  # set once the sweep is finished: nothing follows it
        self.lagged = 0  # how many times a client fell behind (for /health)
        self._recent: deque[Entry] = deque(maxlen=RECENT)
        self._clients: set[_Client] = set()
        self._closed = False
        self._limiter = anyio.CapacityLimiter(1)  # catch-up reads, one at a time, never the service's writes

    # -- Subscriber ------------------------------------------------------------------------------------------
    def publish(self, stored: StoredEvent, state: SweepState) -> None:
        entry = Entry(stored)
        if self._recent and self._recent[-1].seq + 1 != stored.seq:
            self._recent.clear()  # keep the window contiguous
        self._recent.append(entry)
        self.state, self.last_seq = state, stored.seq
        if state.finished:
            self.final_seq = stored.seq
        for client in self._clients:
            was_lagging = client.lagging
            client.offer(entry)
            if client.lagging and not was_lagging:
                self.lagged += 1

    async def run(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.close()

    async def drain(self) -> None:
        """At the end of the sweep: give connected clients a moment to receive the last events."""
        with anyio.move_on_after(DRAIN_SECONDS):
            while self._clients:
                await anyio.sleep(0.02)

    def close(self) -> None:
        """End every subscription (serve is stopping); clients resume elsewhere from their last seq."""
        self._closed = True
        for client in self._clients:
            client.wake.set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- followers -------------------------------------------------------------------------------------------
    def subscribe(self, since: int = 0) -> Subscription:
        """Every event with seq > ``since``, in order, exactly once: from the log, then live."""
        client = _Client(self.buffer_size)
        self._clients.add(client)
        return Subscription(self, client, since)

    def _from_memory(self, next_seq: int) -> list[Entry] | None:
        recent = self._recent
        if not recent or not recent[0].seq <= next_seq <= recent[-1].seq:
            return None
        start = next_seq - recent[0].seq
        return list(islice(recent, start, start + PAGE))

    async def _from_log(self, since: int) -> list[Entry]:
        def page() -> list[Entry]:
            return [Entry(s) for s in islice(self.reader.read(since), PAGE)]

        return await anyio.to_thread.run_sync(page, limiter=self._limiter)


class Subscription:
    """One follower's cursor. ``await next()`` gives a batch, or None once the stream is over."""

    def __init__(self, hub: EventHub, client: _Client, since: int):
        self.hub = hub
        self._client = client
        self.next_seq = max(0, since) + 1
        self._catch_up = True  # always look in the log first: the service may not have published yet

    async def next(self) -> Batch | None:
        hub, client = self.hub, self._client
        while not hub._closed:
            client.wake = anyio.Event()
            if client.lagging:
                client.lagging, dropped, client.dropped = False, client.dropped, 0
                self._catch_up = True
                return Lagging(since=self.next_seq - 1, dropped=dropped)
            buf = client.buffer
            while buf and buf[0].seq < self.next_seq:
                buf.popleft()  # already sent from the log
            if buf and buf[0].seq == self.next_seq:
                batch = [buf.popleft() for _ in range(min(len(buf), PAGE))]  # the buffer is contiguous
                return self._sent(batch)
            if self._catch_up or buf or hub.last_seq >= self.next_seq:
                memory = hub._from_memory(self.next_seq)
                batch = memory if memory is not None else await hub._from_log(self.next_seq - 1)
                # after a memory read, look in the log once more: the service may have appended, not yet published
                self._catch_up = memory is not None or len(batch) >= PAGE
                if batch and batch[0].seq == self.next_seq:
                    return self._sent(batch)
                if buf or hub.last_seq >= self.next_seq:
                    await anyio.sleep(0.05)  # published yet not readable: cannot happen with a durable store
                    continue
            if hub.final_seq is not None and self.next_seq > hub.final_seq:
                return None
            with anyio.move_on_after(hub.keepalive) as scope:
                await client.wake.wait()
            if scope.cancelled_caught:
                return Keepalive()
        return None

    def _sent(self, batch: list[Entry]) -> list[Entry]:
        self.next_seq = batch[-1].seq + 1
        return batch

    def close(self) -> None:
        self.hub._clients.discard(self._client)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
