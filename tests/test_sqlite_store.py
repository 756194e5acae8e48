"""The SQLite event log: durable order, gap-free sequence numbers, torn writes and the lease."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import events as ev
from stores.base import LeaseHeld
from stores.sqlite import SQLiteStore


def test_append_and_read_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    first = store.append([ev.SweepCreated(sweep="s", config={"a": 1})])
    more = store.append([ev.TrialSuggested(trial=1, run="s_trial_0001", params={"x": 0.5}), ev.SweepFinished()])
    assert [s.seq for s in first + more] == [1, 2, 3]
    assert [s.event for s in store.read(0)] == [s.event for s in first + more]
    assert [s.seq for s in store.read(2)] == [3]
    assert store.last_seq() == 3
    store.close()


def test_an_unreadable_row_loads_as_unknown_instead_of_failing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    store.append([ev.SweepCreated(sweep="s", config={})])
    db = sqlite3.connect(tmp_path / "e.db")
    db.execute("INSERT INTO events (seq, ts, type, body) VALUES (2, 0, 'X', '{not json')")
    db.commit()
    db.close()
    events = [s.event for s in store.read(0)]
    assert isinstance(events[1], ev.UnknownEvent)
    store.close()


WRITER = """
import os, sys
sys.path.insert(0, {root!r})
from stores.sqlite import SQLiteStore
from orchestrator import events as ev
store = SQLiteStore({db!r})
for i in range(1, 11):
    store.append([ev.TrialSuggested(trial=i, run=f"s_trial_{{i:04d}}", params={{"i": i, "pad": "x" * 500}})])
os._exit(0)  # die without closing: the last transactions live only in the WAL
"""


def test_a_torn_last_record_is_recovered_from(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    root = str(Path(__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", WRITER.format(root=root, db=str(db))], check=True, timeout=60)
    wal = Path(str(db) + "-wal")
    assert wal.stat().st_size > 0
    with open(wal, "r+b") as f:  # cut the last frame in half, as a crash mid-write would
        f.truncate(wal.stat().st_size - 700)
    store = SQLiteStore(db)
    seqs = [s.seq for s in store.read(0)]
    assert 1 <= len(seqs) < 10 and seqs == list(range(1, len(seqs) + 1))
    (new,) = store.append([ev.SweepFinished()])
    assert new.seq == len(seqs) + 1
    store.close()


def test_the_lease_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
            f"from stores.sqlite import SQLiteStore\nSQLiteStore({str(db)!r}).acquire_lease('t')\n"
            "print('held', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    store = SQLiteStore(db)
    with pytest.raises(LeaseHeld, match=f"pid {holder.pid}"):
        store.acquire_lease("me")
    holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
    holder.wait()
    store.acquire_lease("me")
    store.close()
    assert os.path.exists(str(db) + ".lease")
