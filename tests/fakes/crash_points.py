"""``serve`` that kills itself with SIGKILL at one exact, dangerous moment, for the crash tests.

    python tests/fakes/crash_points.py POINT N serve --sweep ...   # the rest is serve's own command line

POINT is where, N which occurrence in this process:

- ``mid-write``: during the N-th store append, when its COMMIT starts: the rows are written, the transaction is not
  committed (a torn write in the WAL that SQLite must roll back);
- ``after-commit``: right after the N-th append is durable, before the service folds it or acts on it;
- ``dispatch``: right after the N-th job was handed to the local dispatcher (its launcher has claimed the key and
  started the job), before the service has logged ``JobSubmitted``.

It is the real service in a real process; only the moment of death is chosen. Just before dying it writes what it
was doing to ``crash.json`` in the working directory (the log's last seq before the torn write, the last seq
committed, or the job key dispatched), so the test can check the aftermath.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def die(**report: Any) -> None:
    with open("crash.json", "w") as f:
        json.dump(report, f)
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, n: int) -> None:
    from dispatchers.local import LocalDispatcher
    from stores.sqlite import SQLiteStore

    seen = {"count": 0}

    def nth() -> bool:
        seen["count"] += 1
        return seen["count"] == n

    if point in ("mid-write", "after-commit"):
        append = SQLiteStore.append

        def crashing_append(self: SQLiteStore, events: Any) -> Any:
            if not events or not nth():
                return append(self, events)
            if point == "mid-write":
                before = self.last_seq()
                self._db.set_trace_callback(
                    lambda sql: die(last_seq=before, writing=len(events)) if sql.strip().upper() == "COMMIT" else None
                )
                return append(self, events)
            stored = append(self, events)
            die(last_seq=stored[-1].seq)
            return stored

        SQLiteStore.append = crashing_append  # type: ignore[method-assign]
    elif point == "dispatch":
        submit = LocalDispatcher.submit

        async def crashing_submit(self: LocalDispatcher, spec: Any) -> Any:
            handle = await submit(self, spec)
            if nth():
                die(key=spec.key)
            return handle

        LocalDispatcher.submit = crashing_submit  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from orchestrator.cli import main

    sys.exit(main(sys.argv[3:]))
