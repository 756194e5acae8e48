"""The embedded default store: the event log in one SQLite file, and the sweep's lease beside it.

WAL mode with ``synchronous=FULL``: ``append`` returns only after the transaction is on disk, so an intent is
durable before its side effect. SQLite's journal makes a record cut mid-write disappear whole on the next open
(the transaction never committed); a row whose JSON cannot be read loads as an UnknownEvent instead of failing.

The lease is an ``flock`` on ``<db>.lease``: the kernel drops it the instant its holder dies (even on kill -9),
so a second service is refused while the first lives and takes over as soon as it is gone.

The log is whole in ``events.db``: a passive checkpoint folds the WAL back every ~1,000 pages while the sweep runs
(and the WAL file is cut back to 4 MB), and ``checkpoint`` (a TRUNCATE checkpoint) runs when a sweep finishes and
when the service stops, so the file can be copied on its own. Every SQLite failure leaves here as one StoreError
that says what happened and what to do (see ``store_error``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from orchestrator.core.events import Event, StoredEvent, event_from_json, event_to_json
from stores.base import LeaseHeld, StoreError, disk_full

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
        self._lease_fd: int | None = None
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA wal_autocheckpoint=1000")  # pages (~4 MB): SQLite's default, stated
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            self._db.executescript(_SCHEMA)
            _check_whole(self._db, self.path)
        except (sqlite3.Error, OSError) as exc:
            self._db.close()
            raise store_error(exc, self.path, "open") from None

    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        if not events:
            return []
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    (last,) = cur.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
                    rows = [(last + i + 1, e.ts, e.type, event_to_json(e)) for i, e in enumerate(events)]
                    cur.executemany("INSERT INTO events (seq, ts, type, body) VALUES (?, ?, ?, ?)", rows)
                    cur.execute("COMMIT")
                except BaseException:
                    # SQLite may have rolled back on its own (a full disk does): a second ROLLBACK would then
                    # raise "no transaction is active" and hide the real error.
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise store_error(exc, self.path, "append to") from None
        return [StoredEvent(seq=row[0], event=e) for row, e in zip(rows, events)]

    def read(self, since: int = 0) -> Iterator[StoredEvent]:
        # Page through so a 100,000-event log never sits in memory twice.
        since = min(max(int(since), 0), _MAX_SEQ)  # SQLite cannot bind an integer beyond 64 bits
        while True:
            with self._lock:
                try:
                    rows = self._db.execute(
                        "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT 5000", (since,)
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise store_error(exc, self.path, "read") from None
            if not rows:
                return
            for seq, body in rows:
                if not isinstance(seq, int) or not isinstance(body, (str, bytes)):  # NOT NULL broken: damage
                    raise store_error(sqlite3.DatabaseError("database disk image is malformed"), self.path, "read")
                yield StoredEvent(seq, event_from_json(body))
            since = rows[-1][0]

    def last_seq(self) -> int:
        with self._lock:
            try:
                (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            except sqlite3.Error as exc:
                raise store_error(exc, self.path, "read") from None
        return int(last)

    def checkpoint(self) -> None:
        """Fold the WAL into events.db and empty it, so the file alone holds the whole log (for a copy or backup).
        Best effort: a reader still inside the WAL makes SQLite skip it, and the next one catches up."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass

    def acquire_lease(self, owner: str) -> None:
        lease = self.path.with_name(self.path.name + ".lease")
        try:
            fd = os.open(lease, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(exc, self.path, "lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LeaseHeld(holder) from None
        self._lease_fd = fd
        info = {"owner": owner, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:
            self.release_lease()
            raise store_error(exc, self.path, "lock") from None

    def release_lease(self) -> None:
        if self._lease_fd is not None:
            fcntl.flock(self._lease_fd, fcntl.LOCK_UN)
            os.close(self._lease_fd)
            self._lease_fd = None

    def close(self) -> None:
        self.release_lease()
        with self._lock:
            self._db.close()


_MAX_SEQ = 2**63 - 1
_WAL_LIMIT = 4 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint

_RECOVER = (
    "To salvage what it still holds: `sqlite3 {path} .recover > fixed.sql` (sqlite3 3.29 or newer) "
    "writes every row SQLite can still read "
    "as SQL statements; `sqlite3 events.new.db < fixed.sql` loads them into a new file; keep the damaged one aside "
    "and move events.new.db to {path}, then run the same command again."
)


def _check_whole(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file cut short: SQLite reads the missing end of a page as zeros, which can pass unnoticed (or lose
    rows silently). A database file is a whole number of pages and, once its WAL is folded in, as many as SQLite
    counts. Only ``stat`` here: opening and closing the file from this process would drop SQLite's locks on it."""
    page = int(db.execute("PRAGMA page_size").fetchone()[0])
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])  # first: a checkpoint after it only grows the file
    wal = path.with_name(path.name + "-wal")
    wal_empty = not wal.exists() or wal.stat().st_size == 0
    size = path.stat().st_size
    if size % page or (wal_empty and pages * page > size):
        raise sqlite3.DatabaseError(
            f"database disk image is malformed: the file is {size} bytes, {pages * page} expected: it was cut short"
        )


def store_error(exc: BaseException, path: Path, doing: str) -> StoreError:
    """One message a person can act on for a failure of the log at ``path`` while ``doing`` it."""
    text = str(exc)
    low = text.lower()
    if "full" in low or getattr(exc, "errno", None) == errno.ENOSPC or "sqlite_full" in low:
        return disk_full(f"{doing} the event log {path}", text)
    if "readonly" in low or "read-only" in low or getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES):
        return StoreError(
            f"the event log {path} is read-only ({text}): serve must write to it. Make the file and its directory "
            "writable (or copy the sweep directory somewhere writable and pass --train-dir), then run it again.",
            "read-only",
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in low or "not a database" in low or "corrupt" in low or "could not decode" in low
    ):
        return StoreError(f"the event log {path} is damaged ({text}). " + _RECOVER.format(path=path), "damaged")
    if "unable to open" in low:
        return StoreError(f"cannot open the event log {path} ({text}): check that its directory exists and is writable")
    return StoreError(f"cannot {doing} the event log {path}: {text}")


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid')} on {info.get('host')} (since {since})"
    except ValueError:
        return "another process"
