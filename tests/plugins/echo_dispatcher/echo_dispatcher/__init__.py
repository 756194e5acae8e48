"""A tiny dispatcher plugin: runs each job's argv as a child process and echoes what it prints.

It shows the whole plugin contract (see the orchestrator's docs/dispatchers.md) in a few dozen lines:

- registered under the entry point group ``orchestrator.dispatchers`` as ``echo`` (see pyproject.toml);
- constructed as ``EchoDispatcher(name="echo", **dispatcher_options.echo)``;
- ``submit`` is idempotent on the job key: a job directory per key records that the job exists and how it
  ended, so ``find`` knows the job after the service restarts.

Its jobs are children of the service (a restart of the service ends them; ``watch`` then reports that), which
is fine for a demo, not for long training runs. Three options make it misbehave on purpose, for tests (each a
key substring): ``raise_on`` (``submit`` raises), ``hang_on`` (``submit`` never returns) and ``hang_watch_on``
(``watch`` never yields anything). ``cancel`` leaves a ``cancelled`` file in the job's directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from orchestrator.core.contract import ContractReader
from orchestrator.core.jobs import Exited, JobHandle, JobSpec, JobUpdate, Output, Started


class EchoDispatcher:
    def __init__(
        self,
        name: str = "echo",
        state_dir: str = "train_dir/.echo",
        raise_on: str | None = None,
        hang_on: str | None = None,
        hang_watch_on: str | None = None,
    ) -> None:
        self.name = name
        self.state_dir = Path(state_dir)
        self.raise_on, self.hang_on, self.hang_watch_on = raise_on, hang_on, hang_watch_on
        self._procs: dict[str, Any] = {}

    def _dir(self, key: str) -> Path:
        return self.state_dir / key

    async def find(self, spec: JobSpec) -> JobHandle | None:
        return (
            JobHandle(spec.key, self.name, {"dir": str(self._dir(spec.key))}) if self._dir(spec.key).exists() else None
        )

    async def submit(self, spec: JobSpec) -> JobHandle:
        if self.raise_on and self.raise_on in spec.key:
            raise RuntimeError(f"echo refuses {spec.key} (raise_on={self.raise_on!r})")
        if self.hang_on and self.hang_on in spec.key:
            await anyio.sleep_forever()
        existing = await self.find(spec)
        if existing is not None:
            return existing
        self._dir(spec.key).mkdir(parents=True)
        self._procs[spec.key] = await anyio.open_process(
            spec.argv,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            stderr=-2,  # stderr into stdout
        )
        return JobHandle(spec.key, self.name, {"dir": str(self._dir(spec.key))})

    async def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        if self.hang_watch_on and self.hang_watch_on in spec.key:
            await anyio.sleep_forever()  # never reports, never ends: only the service's limit stops it
        exit_file = self._dir(spec.key) / "exit.json"
        proc = self._procs.get(spec.key)
        if proc is None:  # a job started by an earlier service process
            if exit_file.exists():
                yield Exited(**json.loads(exit_file.read_text()))
            else:
                yield Exited(exit_code=None, error="echo lost this job when the service restarted")
            return
        t0, reader, buf = time.monotonic(), ContractReader(), b""
        yield Started()
        async for chunk in proc.stdout:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                for update in reader.read(line):  # the contract's rules, as every dispatcher applies them
                    yield Output(f"[echo] {line}") if isinstance(update, Output) else update
        code = await proc.wait()
        exited = reader.exited(code, time.monotonic() - t0, None if code == 0 else f"exit code {code}")
        exit_file.write_text(json.dumps(dataclasses.asdict(exited)))
        yield exited

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        (self._dir(spec.key) / "cancelled").touch()
        proc = self._procs.get(spec.key)
        if proc is not None and proc.returncode is None:
            proc.terminate()

    async def aclose(self) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.terminate()
