"""A job's descendants that leave its process group (setsid, the daemon's double fork) end with the job: the
launcher is their subreaper. Real jobs, real launchers; each checks afterwards that the escaped pids are gone."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from dispatchers.local import _alive
from orchestrator.jobs import Output
from tests.test_local_dispatcher import collect, dispatcher, only_exit, script, spec_for, watch_until_waiting

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")]

ESCAPING_JOB = """
import os, sys, time

def record(name):
    with open(name + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(name + ".tmp", name)

if os.fork() == 0:  # the daemon's double fork: fork, setsid, fork, and the middle one exits
    os.setsid()
    if os.fork() == 0:
        record("daemon.pid")
        time.sleep(300)
    os._exit(0)
if os.fork() == 0:  # a child that only leaves the group: still the job's child while the job lives
    os.setsid()
    record("setsid.pid")
    time.sleep(300)
    os._exit(0)
while not (os.path.exists("daemon.pid") and os.path.exists("setsid.pid")):
    time.sleep(0.01)
print("waiting", flush=True)
if sys.argv[1] != "exit":
    time.sleep(300)
"""


def escaped(tmp_path: Path) -> list[int]:
    return [int((tmp_path / name).read_text()) for name in ("daemon.pid", "setsid.pid")]


def assert_gone(tmp_path: Path) -> None:
    pids = escaped(tmp_path)
    alive = [pid for pid in pids if _alive(pid, None)]
    for pid in alive:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert alive == [], f"escaped descendants outlived their job: {alive}"


async def test_escaped_descendants_end_when_the_job_exits(tmp_path: Path) -> None:
    d = dispatcher()
    spec = spec_for(tmp_path, [sys.executable, script(tmp_path, ESCAPING_JOB), "exit"])
    ex = only_exit(await collect(d, spec, await d.submit(spec)))
    assert ex.exit_code == 0 and ex.error is None
    assert_gone(tmp_path)


async def test_escaped_descendants_end_when_the_job_times_out(tmp_path: Path) -> None:
    d = dispatcher()
    spec = spec_for(tmp_path, [sys.executable, script(tmp_path, ESCAPING_JOB), "sleep"], timeout=3.0)
    updates = await collect(d, spec, await d.submit(spec), limit=60)
    assert any(isinstance(u, Output) and u.line == "waiting" for u in updates)
    assert only_exit(updates).error.startswith("timed out after")
    assert_gone(tmp_path)


async def test_escaped_descendants_end_when_the_job_is_cancelled(tmp_path: Path) -> None:
    d = dispatcher()
    spec = spec_for(tmp_path, [sys.executable, script(tmp_path, ESCAPING_JOB), "sleep"])
    handle = await d.submit(spec)

    async def cancel() -> None:
        await d.cancel(spec, handle)

    ex = only_exit(await watch_until_waiting(d, spec, handle, cancel))
    assert ex.error.startswith("cancelled after")
    assert_gone(tmp_path)
