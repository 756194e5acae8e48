"""The embedded default store: the event log in one SQLite file, and the sweep's lease beside it.

WAL mode with ``synchronous=FULL``: ``append`` returns only after the transaction is on disk, so an intent is
durable before its side effect. SQLite's journal makes a record cut mid-write disappear whole on the next open
(the transaction never committed); a row whose JSON cannot be read loads as an UnknownEvent instead of failing.

The lease is an ``flock`` on ``<db>.lease``: the kernel drops it the instant its holder dies (even on kill -9),
so a second service is refused while the first lives and takes over as soon as it is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from orchestrator.events import Event, StoredEvent, event_from_json, event_to_json
from stores.base import LeaseHeld

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq  INTEGER PRIMARY KEY,
    ts   REAL NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


class SQLiteStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lease_fd: int | None = None

    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        if not events:
            return []
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                (last,) = cur.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
                rows = [(last + i + 1, e.ts, e.type, event_to_json(e)) for i, e in enumerate(events)]
                cur.executemany("INSERT INTO events (seq, ts, type, body) VALUES (?, ?, ?, ?)", rows)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return [StoredEvent(seq=row[0], event=e) for row, e in zip(rows, events)]

    def read(self, since: int = 0) -> Iterator[StoredEvent]:
        # Page through so a 100,000-event log never sits in memory twice.
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT 5000", (since,)
                ).fetchall()
            if not rows:
                return
            for seq, body in rows:
                yield StoredEvent(seq, event_from_json(body))
            since = rows[-1][0]

    def last_seq(self) -> int:
        with self._lock:
            (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(last)

    def acquire_lease(self, owner: str) -> None:
        lease = self.path.with_name(self.path.name + ".lease")
        fd = os.open(lease, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LeaseHeld(holder) from None
        info = {"owner": owner, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._lease_fd = fd

    def release_lease(self) -> None:
        if self._lease_fd is not None:
            fcntl.flock(self._lease_fd, fcntl.LOCK_UN)
            os.close(self._lease_fd)
            self._lease_fd = None

    def close(self) -> None:
        self.release_lease()
        with self._lock:
            self._db.close()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid')} on {info.get('host')} (since {since})"
    except ValueError:
        return "another process"
