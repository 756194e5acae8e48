"""A small, restart-safe dispatcher plugin: runs each job's argv on this machine and echoes what it prints.

It shows the whole plugin contract (see the orchestrator's docs/dispatchers.md), including the hard part, a
service restart, in one short module and its wrapper (``wrapper.py``):

- registered under the entry point group ``orchestrator.dispatchers`` as ``echo`` (see pyproject.toml);
- constructed as ``EchoDispatcher(name="echo", **dispatcher_options.echo)``;
- **claims the key atomically**: ``submit`` creates ``<state_dir>/<key>/claim`` with O_EXCL, so two submits of
  one key (or a restarted service racing its predecessor) start the job once;
- **detaches the job**: a wrapper in its own session runs it, so the job outlives the service;
- **records the exit while the service is down**: the wrapper writes ``exit.json``; ``watch`` reads output.log
  and exit.json, so a fresh instance reattaches to a running job or reports one that ended meanwhile;
- **notices a reused pid**: the wrapper's pid is recorded with its start time (``/proc/<pid>/stat``), so a dead
  wrapper is never mistaken for a new process that got its pid.

Failure reasons come from the orchestrator's shared builders (ContractReader for the result,
``orchestrator.core.failures`` for exit statuses), so they read exactly as the local dispatcher's.

Three options make it misbehave on purpose, for tests (each a key substring): ``raise_on`` (``submit`` raises),
``hang_on`` (``submit`` never returns) and ``hang_watch_on`` (``watch`` never yields anything). ``cancel`` leaves
a ``cancelled`` file in the job's directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from orchestrator.core.contract import ContractReader
from orchestrator.core.failures import TAIL_LINES, exit_status, quote_output, timed_out
from orchestrator.core.jobs import Exited, JobHandle, JobSpec, JobUpdate, Output, Started

WRAPPER = str(Path(__file__).with_name("wrapper.py"))


class EchoDispatcher:
    def __init__(
        self,
        name: str = "echo",
        state_dir: str = "train_dir/.echo",
        poll_interval: float = 0.1,
        raise_on: str | None = None,
        hang_on: str | None = None,
        hang_watch_on: str | None = None,
    ) -> None:
        self.name = name
        self.state_dir = Path(state_dir).absolute()
        self.poll_interval = poll_interval
        self.raise_on, self.hang_on, self.hang_watch_on = raise_on, hang_on, hang_watch_on
        self._children: list[subprocess.Popen[bytes]] = []  # our wrappers, reaped so they leave no zombie

    def _dir(self, key: str) -> Path:
        return self.state_dir / key

    def _handle(self, spec: JobSpec) -> JobHandle:
        return JobHandle(spec.key, self.name, {"dir": str(self._dir(spec.key))})

    async def find(self, spec: JobSpec) -> JobHandle | None:
        return self._handle(spec) if (self._dir(spec.key) / "claim").exists() else None

    async def submit(self, spec: JobSpec) -> JobHandle:
        if self.raise_on and self.raise_on in spec.key:
            raise RuntimeError(f"echo refuses {spec.key} (raise_on={self.raise_on!r})")
        if self.hang_on and self.hang_on in spec.key:
            await anyio.sleep_forever()
        d = self._dir(spec.key)
        d.mkdir(parents=True, exist_ok=True)
        try:  # the claim: whoever creates this file runs the job; everyone else returns its handle
            os.close(os.open(d / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self._handle(spec)
        await anyio.to_thread.run_sync(self._spawn, spec, d)
        return self._handle(spec)

    def _spawn(self, spec: JobSpec, d: Path) -> None:
        cmd = [sys.executable, WRAPPER, str(d), repr(float(spec.timeout or 0)), "--", *spec.argv]
        proc = subprocess.Popen(
            cmd,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not stopped with the service, nor by its Ctrl-C
        )
        self._children.append(proc)
        _write_json(d / "wrapper.json", {"pid": proc.pid, "ticks": _start_ticks(proc.pid)})

    async def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        if self.hang_watch_on and self.hang_watch_on in spec.key:
            await anyio.sleep_forever()  # never reports, never ends: only the service's limit stops it
        d = Path(handle.data.get("dir") or self._dir(spec.key))
        log = d / "output.log"
        reader, last_lines = ContractReader(), deque[str](maxlen=TAIL_LINES)
        offset, pending, started = 0, b"", False
        while True:
            self._reap()
            end = _read_json(d / "exit.json")  # before the output: output.log is complete once it exists
            if not started and (d / "job.json").exists():
                started = True
                yield Started()
            try:
                with open(log, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            if end is not None and pending:
                lines, pending = [*lines, pending], b""
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                last_lines.append(line)
                for update in reader.read(line):  # the contract's rules, as every dispatcher applies them
                    yield Output(f"[echo] {line}") if isinstance(update, Output) else update
            if end is not None:
                yield _exited(end, reader, last_lines, log)
                return
            if not _alive(_read_json(d / "wrapper.json")) and not (d / "exit.json").exists():
                if (d / "claim").stat().st_mtime > time.time() - 5:  # just claimed: its wrapper is being started
                    await anyio.sleep(self.poll_interval)
                    continue
                error = "echo's wrapper died without recording the job's exit" + quote_output(last_lines, log)
                yield Exited(exit_code=None, error=error)
                return
            await anyio.sleep(self.poll_interval)

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        d = Path(handle.data.get("dir") or self._dir(spec.key))
        (d / "cancelled").touch()
        job = _read_json(d / "job.json")
        if job and not (d / "exit.json").exists() and _alive(_read_json(d / "wrapper.json")):
            try:
                os.kill(int(job["pid"]), signal.SIGTERM)  # the wrapper records how it ended
            except ProcessLookupError:
                pass

    async def aclose(self) -> None:
        self._reap()  # running jobs keep running: a restarted service reattaches

    def _reap(self) -> None:
        self._children = [p for p in self._children if p.poll() is None]


def _exited(end: dict[str, Any], reader: ContractReader, last_lines: deque[str], log: Path) -> Exited:
    code, duration = end.get("exit_code"), float(end.get("duration") or 0.0)
    if end.get("timed_out"):
        error: str | None = timed_out(duration, end.get("timeout"), code)
    else:
        error = end.get("error") or (exit_status(code) if code != 0 else None)
    if error is not None and code != 0:
        error += quote_output(last_lines, log)
    return reader.exited(code, duration, error)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot): with the pid, names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def _alive(wrapper: dict[str, Any] | None) -> bool:
    """Whether the recorded wrapper still runs: same pid *and* same start time (a reused pid is another process)."""
    if not wrapper:
        return False
    ticks = _start_ticks(int(wrapper["pid"]))
    return ticks is not None and ticks == wrapper.get("ticks")
