"""The event hub in-process, on a real SQLite log: every subscription gets every event after ``since`` exactly once
and in order, whatever the interleaving of replay, live publishing, lagging and the end of the sweep."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import events as ev
from orchestrator.hub import EventHub, Keepalive, Lagging, Subscription
from orchestrator.reducer import reduce
from orchestrator.state import SweepState
from stores.sqlite import SQLiteStore


class Service:
    """What SweepService does for subscribers: append durably, fold, publish."""

    def __init__(self, path: Path, hub_buffer: int = 1024):
        self.store = SQLiteStore(path)
        self.store._db.execute("PRAGMA synchronous=OFF")  # durability is the store's test; keep this one fast
        self.hub = EventHub(SQLiteStore(path), buffer_size=hub_buffer, keepalive=0.01)
        self.state = SweepState()

    def commit(self, events: list[ev.Event], publish: bool = True) -> None:
        for stored in self.store.append(events):
            self.state = reduce(self.state, stored.event)
            if publish:
                self.hub.publish(stored, self.state)

    def progress(self, n: int, publish: bool = True) -> None:
        self.commit([ev.JobProgress(key="k", step=i) for i in range(n)], publish)

    def finish(self) -> None:
        self.commit([ev.SweepFinished(best_trial=None)])


def start(svc: Service) -> None:
    svc.commit([ev.SweepCreated(sweep="s", config={})])


async def collect(sub: Subscription, until: int | None = None, notices: list | None = None) -> list[int]:
    seqs: list[int] = []
    while True:
        batch = await sub.next()
        if batch is None:
            return seqs
        if isinstance(batch, Keepalive):
            continue
        if isinstance(batch, Lagging):
            if notices is not None:
                notices.append(batch)
            continue
        seqs += [e.seq for e in batch]
        if until is not None and seqs and seqs[-1] >= until:
            return seqs


def test_replay_then_live_then_end(tmp_path: Path) -> None:
    async def main() -> None:
        svc = Service(tmp_path / "events.db")
        start(svc)
        svc.progress(10)
        got: dict[int, list[int]] = {}

        async def follower(since: int) -> None:
            async with svc.hub.subscribe(since) as sub:
                got[since] = await collect(sub)

        async with anyio.create_task_group() as tg:
            for since in (0, 3, 11, 20):
                tg.start_soon(follower, since)
            await anyio.sleep(0.05)
            svc.progress(5)
            await anyio.sleep(0)
            svc.progress(5)
            svc.finish()  # seq 22: the stream ends after it
        assert got[0] == list(range(1, 23))
        assert got[3] == list(range(4, 23))
        assert got[11] == list(range(12, 23))
        assert got[20] == [21, 22]
        assert svc.hub.clients == 0

    anyio.run(main)


def test_events_durable_but_not_yet_published_are_not_doubled(tmp_path: Path) -> None:
    """The service appends, then publishes: a subscriber that reads the log in between sees them once."""

    async def main() -> None:
        svc = Service(tmp_path / "events.db")
        start(svc)
        svc.progress(5, publish=False)  # in the log, not yet published
        async with svc.hub.subscribe(0) as sub:
            first = await collect(sub, until=6)
            for stored in list(svc.store.read(1)):  # now the service publishes them
                svc.hub.publish(stored, svc.state)
            svc.finish()
            rest = await collect(sub)
        assert first + rest == list(range(1, 8))

    anyio.run(main)


def test_lagging_client_is_told_and_catches_up_from_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        svc = Service(tmp_path / "events.db", hub_buffer=4)
        start(svc)
        notices: list[Lagging] = []
        async with svc.hub.subscribe(0) as sub:
            assert await collect(sub, until=1) == [1]
            svc.progress(50)  # far more than the buffer while the client is not reading
            assert len(svc.hub._clients.copy().pop().buffer) <= 4  # bounded
            svc.progress(10_000)  # beyond the in-memory window too: the catch-up reads the store
            svc.finish()
            rest = await collect(sub, notices=notices)
        assert rest == list(range(2, 10_053))
        assert notices and notices[0].since == 1 and notices[0].dropped > 0
        assert svc.hub.lagged >= 1

    anyio.run(main)


def test_close_ends_every_subscription(tmp_path: Path) -> None:
    async def main() -> None:
        svc = Service(tmp_path / "events.db")
        start(svc)
        ended = []

        async def follower() -> None:
            async with svc.hub.subscribe(0) as sub:
                ended.append(await collect(sub))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(follower)
            await anyio.sleep(0.05)
            svc.hub.close()
        assert ended == [[1], [1], [1]]

    anyio.run(main)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), min_size=1, max_size=12),
    buffer=st.integers(1, 16),
    since=st.integers(0, 40),
    unpublished=st.integers(0, 5),
)
def test_exactly_once_in_order_under_any_interleaving(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int]], buffer: int, since: int, unpublished: int
) -> None:
    """Publish in bursts while the follower reads a few batches (or none) between them; it gets seq > since once."""
    path = tmp_path_factory.mktemp("hub") / "events.db"

    async def main() -> None:
        svc = Service(path, hub_buffer=buffer)
        start(svc)
        svc.progress(unpublished, publish=False)
        for stored in list(svc.store.read(1)):
            svc.hub.publish(stored, svc.state)
        got: list[int] = []
        async with svc.hub.subscribe(since) as sub:
            for burst, reads in steps:
                svc.progress(burst)
                for _ in range(reads):
                    with anyio.move_on_after(0.2):
                        batch = await sub.next()
                        if isinstance(batch, list):
                            got.extend(e.seq for e in batch)
            svc.finish()
            got += await collect(sub)
        last = svc.store.last_seq()
        assert got == list(range(since + 1, last + 1))

    anyio.run(main)
