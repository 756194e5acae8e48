"""attach, the HTTP stream and status --follow with real processes and real HTTP on 127.0.0.1.

Every wait here is on a condition (a file, the log, /health), bounded by a generous deadline; nothing depends on
how fast the machine is. Jobs hold at a gate file so the sweep is certainly running while a test does its thing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator.attach import scheduler_name
from orchestrator.events import StoredEvent, SweepCreated
from orchestrator.reducer import reduce
from orchestrator.render import describe, summary
from orchestrator.state import SweepState
from stores.sqlite import SQLiteStore
from tests.conftest import serve_env

PY = sys.executable
DEADLINE = 60.0

JOB = """
import json, os, sys, time
kind = "eval" if sys.argv[1].endswith("evaluate") else "train"
for i in range(3):
    print(f"Epoch {{i}} / 1000 sps / {{100 * (i + 1) / 3:.2f}}% of 3.00 ksteps", flush=True)
    time.sleep(0.05)
while not os.path.exists({gate!r}):
    time.sleep(0.05)
if kind == "eval":
    print("SWEEP_RESULT " + json.dumps({{"score": 1.0}}), flush=True)
"""

SWEEP = """
max_trials = {trials}
max_parallel_jobs = 2
monitoring_interval = 60
recipe_module = "toy"
command = ["{python}", "{job}"]
retry_backoff = 0.1
seed = 3

[protein_config]
metric = "score"
method = "random"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = -1.0
max = 1.0
"""


class Sweep:
    """A sweep directory with a gated job, and the commands to serve and follow it."""

    def __init__(self, root: Path, name: str = "live", trials: int = 3):
        self.root, self.name = root, name
        self.gate = root / "gate"
        job = root / "job.py"
        job.write_text(textwrap.dedent(JOB.format(gate=str(self.gate))))
        (root / "sweep.toml").write_text(SWEEP.format(trials=trials, python=PY, job=job))
        self.dir = root / "train_dir" / name
        self.procs: list[subprocess.Popen] = []

    def popen(self, args: list[str], out: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [PY, "-m", "orchestrator", *args],
            cwd=self.root,
            env=serve_env(**(env or {})),
            stdout=open(self.root / out, "w"),
            stderr=open(self.root / f"{out}.err", "w"),
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def serve(self, out: str = "serve.log", **env: str) -> subprocess.Popen:
        args = ["serve", "--sweep", self.name, "--config", "sweep.toml", "--log-format", "human"]
        return self.popen(args, out, env)

    def attach(self, out: str, *extra: str, **env: str) -> subprocess.Popen:
        return self.popen(["attach", "--sweep", self.name, *extra], out, env)

    def endpoint(self) -> dict[str, Any]:
        path = self.dir / "endpoint.json"
        wait_for(lambda: path.exists(), "endpoint.json")
        return json.loads(path.read_text())

    def url(self) -> str:
        return self.endpoint()["url"]

    def stored(self) -> list[StoredEvent]:
        store = SQLiteStore(self.dir / "events.db")
        try:
            return list(store.read(0))
        finally:
            store.close()

    def types(self) -> list[str]:
        if not (self.dir / "events.db").exists():
            return []
        db = sqlite3.connect(self.dir / "events.db")
        try:
            return [t for (t,) in db.execute("SELECT type FROM events ORDER BY seq")]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def text(self, name: str) -> str:
        return (self.root / name).read_text()

    def cleanup(self) -> None:
        self.gate.touch()
        for log in sorted(self.root.glob("*.log*")) + sorted(self.root.glob("*.err")):  # shown if the test failed
            print(f"----- {log.name}\n{log.read_text()[-3000:]}")
        print("----- log types:", self.types())
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def sweep(tmp_path: Path):
    s = Sweep(tmp_path)
    yield s
    s.cleanup()


def wait_for(cond: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen) -> int:
    return proc.wait(timeout=DEADLINE)


def health(url: str, **headers: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", headers=headers, timeout=5).json()


def expected_lines(stored: list[StoredEvent]) -> list[str]:
    """What serve prints for each event (and the summary at the end), folded the way attach folds."""
    state, lines = SweepState(), []
    for s in stored:
        state = reduce(state, s.event)
        line = describe(s.event, state, scheduler_name(state))
        if line is not None:
            lines.append(f"[{line[0]}] {line[1]}")
    return lines + summary(state).splitlines()


def assert_exactly_the_log(json_lines: list[str], stored: list[StoredEvent]) -> None:
    got = [json.loads(line) for line in json_lines]
    assert [g["seq"] for g in got] == list(range(1, len(stored) + 1))
    assert [g["event"] for g in got] == [json.loads(s.event.model_dump_json()) for s in stored]


def test_attach_sees_every_event_once_in_order_across_a_sigkill_and_restart(sweep: Sweep) -> None:
    # Both followers start before serve: --wait, then replay, then live.
    raw = sweep.attach("attach.json", "--json", "--wait")
    human = sweep.attach("attach.txt", "--wait")
    first = sweep.serve("serve1.log")
    wait_for(lambda: sweep.types().count("JobStarted") >= 2, "two jobs running")
    wait_for(lambda: health(sweep.url())["clients"] >= 2, "both followers connected")

    os.killpg(first.pid, signal.SIGKILL)  # serve only: its jobs live on in their own sessions
    first.wait()
    assert (sweep.dir / "endpoint.json").exists()  # stale: attach must see through it
    # Without serve and without --wait, attach says so, shows the stored history and exits 4.
    history = sweep.attach("history.json", "--json")
    assert finish(history) == 4
    assert "not running" in sweep.text("history.json.err")
    assert_exactly_the_log(sweep.text("history.json").splitlines(), sweep.stored())

    second = sweep.serve("serve2.log")
    wait_for(lambda: (sweep.dir / "endpoint.json").exists() and sweep.endpoint()["pid"] == second.pid, "restart")
    url = sweep.url()
    wait_for(lambda: health(sweep.url())["clients"] >= 2, "both followers back")
    sweep.gate.touch()
    assert finish(second) == 0
    assert finish(raw) == 0, sweep.text("attach.json.err")
    assert finish(human) == 0, sweep.text("attach.txt.err")

    stored = sweep.stored()
    types = [s.event.type for s in stored]
    assert "SweepResumed" in types and types[-1] == "SweepFinished"
    assert_exactly_the_log(sweep.text("attach.json").splitlines(), stored)
    assert sweep.text("attach.txt").splitlines() == expected_lines(stored)
    for name in ("attach.json.err", "attach.txt.err"):
        assert f"connected to {url}; resuming after seq" in sweep.text(name)
    assert not (sweep.dir / "endpoint.json").exists()  # removed on a clean exit


async def _follow(url: str, since: int = 0) -> list[int]:
    seqs: list[int] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=DEADLINE)) as client:
        async with client.stream("GET", f"{url}/events", params={"since": since}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seqs.append(json.loads(line[6:])["seq"])
    return seqs


def test_fifty_clients_while_a_sweep_runs(sweep: Sweep) -> None:
    serve = sweep.serve()
    url = sweep.url()
    wait_for(lambda: "JobStarted" in sweep.types(), "a job running")
    attach = sweep.attach("attach.json", "--json")
    results: dict[int, list[int]] = {}

    async def main() -> None:
        async def one(i: int) -> None:
            results[i] = await _follow(url, since=0 if i % 2 == 0 else 3)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
            with anyio.fail_after(DEADLINE):
                while health(url)["clients"] < 51:
                    await anyio.sleep(0.05)
            sweep.gate.touch()

    anyio.run(main)
    assert finish(serve) == 0
    assert finish(attach) == 0
    last = len(sweep.stored())
    assert sweep.stored()[-1].event.type == "SweepFinished"
    for i, seqs in results.items():
        assert seqs == list(range(1 if i % 2 == 0 else 4, last + 1)), i
    assert_exactly_the_log(sweep.text("attach.json").splitlines(), sweep.stored())


def _request(url: str, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A raw client with a tiny receive window that sends a request and then reads nothing."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def _read_sse(sock: socket.socket) -> tuple[list[int], list[str]]:
    """Read a chunked SSE response to its end: (seqs, event types of control messages)."""
    data = b""
    sock.settimeout(DEADLINE)
    while chunk := sock.recv(1 << 16):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    text = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        text, body = text + rest[:n], rest[n + 2 :]
    seqs, controls = [], []
    for message in text.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in message.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            controls.append(fields["event"])
        elif "data" in fields:
            seqs.append(json.loads(fields["data"])["seq"])
    return seqs, controls


def test_a_client_that_never_reads_does_not_hold_up_the_sweep(sweep: Sweep) -> None:
    """A long history (padding the reducer ignores) fills the stuck clients' sockets; with tiny per-client buffers
    they fall behind. The sweep runs to its end, the others see everything, and the one that finally reads is told
    it lagged and still gets every event exactly once, in order."""
    from orchestrator.config import load_config
    from orchestrator.events import JobProgress

    config = load_config(sweep.root / "sweep.toml", {"sweep_name": sweep.name})
    store = SQLiteStore(sweep.dir / "events.db")
    store.append([SweepCreated(sweep=sweep.name, config=config.public_dict())])
    store.append([JobProgress(key="history-padding", step=i, total=20_000, sps=1.0) for i in range(20_000)])
    store.close()

    serve = sweep.serve(ORCHESTRATOR_HUB_BUFFER="2")
    url = sweep.url()
    attach = sweep.attach("attach.txt")
    never = _request(url, "/events?since=0")
    slow = _request(url, "/events?since=0")
    wait_for(lambda: health(url)["lagged"] >= 2, "both stuck clients to fall behind")
    got: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: got.update(slow=_read_sse(slow)))
    reader.start()
    sweep.gate.touch()
    assert finish(serve) == 0  # the stream to the never-reader is cut when serve stops
    reader.join(DEADLINE)
    assert finish(attach) == 0
    never.close()

    stored = sweep.stored()
    seqs, controls = got["slow"]
    assert seqs == list(range(1, len(stored) + 1))
    assert "lagging" in controls
    assert sweep.text("attach.txt").splitlines() == expected_lines(stored)


def test_a_wrong_token_is_refused(sweep: Sweep) -> None:
    secret = "s3cret-token-value"
    serve = sweep.serve(SWEEP_HTTP_TOKEN=secret)
    info = sweep.endpoint()
    assert info["token_required"] is True
    assert secret not in (sweep.dir / "endpoint.json").read_text()
    url = info["url"]
    for path in ("/health", "/state", "/events"):
        assert httpx.get(f"{url}{path}", timeout=5).status_code == 401
        assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    ok = httpx.get(f"{url}/state", headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert ok.status_code == 200 and ok.json()["sweep"] == sweep.name

    wrong = sweep.attach("wrong.txt", SWEEP_HTTP_TOKEN="nope")
    missing = sweep.attach("missing.txt", SWEEP_HTTP_TOKEN="")
    assert finish(wrong) == 2 and "refused the token" in sweep.text("wrong.txt.err")
    assert finish(missing) == 2 and "requires a token" in sweep.text("missing.txt.err")
    assert sweep.text("wrong.txt") == ""

    right = sweep.attach("right.json", "--json", SWEEP_HTTP_TOKEN=secret)
    status = sweep.popen(["status", "--sweep", sweep.name, "--follow"], "status.txt", {"SWEEP_HTTP_TOKEN": secret})
    wait_for(lambda: health(url, Authorization=f"Bearer {secret}")["clients"] >= 2, "followers connected")
    sweep.gate.touch()
    assert finish(serve) == 0
    assert finish(right) == 0
    assert finish(status) == 0
    assert_exactly_the_log(sweep.text("right.json").splitlines(), sweep.stored())
    assert "finished, 3/3 trials done" in sweep.text("status.txt")
    for name in ("serve.log", "right.json", "status.txt"):
        assert secret not in sweep.text(name)
    assert secret.encode() not in (sweep.dir / "events.db").read_bytes()
