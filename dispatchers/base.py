"""The Dispatcher protocol: how the service runs jobs anywhere (a subprocess, a cloud GPU, a plugin's backend).

A dispatcher is async and owns nothing the service needs to remember: everything it must find again after a
restart is in the ``JobHandle`` the service records, and the job itself is found again by its stable key.

Contract:

- ``submit(spec)`` starts the job and returns its handle. It is idempotent on ``spec.key``: when a job with that
  key already exists, it returns that job's handle and starts nothing.
- ``find(spec)`` returns the handle of an existing job with ``spec.key``, or None. The service calls it on restart
  for every job it requested but never saw submitted.
- ``watch(spec, handle)`` yields ``JobUpdate``s (Started, Progress, Output) and ends with exactly one ``Exited``.
  It must work on a job started by an earlier service process (reattach): progress and output may repeat,
  the exit may not be lost.
- ``cancel(spec, handle)`` stops the job; it is safe on a job that already ended.
- ``aclose()`` releases the dispatcher's resources; running jobs keep running.

Optional hooks, each a small protocol of its own so the CLI asks ``isinstance(d, DryRun)`` rather than probing
for a name: ``DryRun.dry_run(spec)`` describes what ``submit`` would do without doing it (``dryrun``);
``LocalApiServer`` is a dispatcher backed by a local server a dry run may start and must stop again (SkyPilot).

Any exception from a dispatcher, or a ``watch`` that hangs past the job's timeout, becomes a failed job with the
exception's message as the reason; the service itself lives on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from orchestrator.core.jobs import JobHandle, JobSpec, JobUpdate


@runtime_checkable
class Dispatcher(Protocol):
    name: str

    async def submit(self, spec: JobSpec) -> JobHandle: ...

    async def find(self, spec: JobSpec) -> JobHandle | None: ...

    def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]: ...

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None: ...

    async def aclose(self) -> None: ...


class Router(Dispatcher, Protocol):
    """A dispatcher that sends each job kind somewhere: ``route(kind)`` names where ``train`` or ``eval`` jobs
    go (the scheduler counts jobs in flight per destination). The service runs every job through one of these
    (``dispatchers.registry.RoutingDispatcher``)."""

    def route(self, kind: str) -> str: ...


@runtime_checkable
class DryRun(Protocol):
    async def dry_run(self, spec: JobSpec) -> str:
        """What submitting ``spec`` would do; ValueError with the reason when it could not run."""
        ...


@runtime_checkable
class LocalApiServer(Protocol):
    async def api_server_running(self) -> bool | None: ...

    async def stop_api_server(self) -> None: ...


class DispatcherError(Exception):
    """A dispatcher name or option that cannot be used, or a dispatcher that misbehaved; the message names the
    dispatcher and the fix."""
