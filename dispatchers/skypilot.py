"""The SkyPilot dispatcher: train and eval jobs on cloud GPUs through SkyPilot's Python SDK (0.14).

Every job becomes one ``sky.Task`` that runs the job's argv (quoted with ``shlex.join``: SkyPilot runs a bash
script, so the argv list is quoted item by item, never pasted together) with the job's environment, on
``sky.Resources`` built from the sweep's options. By default it is a *managed job* (``sky.jobs``): SkyPilot's
controller recovers it when a spot instance is preempted. ``launch_mode = "cluster"`` runs it on one cluster
per sweep instead (``sky.launch``; no preemption recovery).

Unlike a fire-and-forget launcher this dispatcher knows its jobs:

- the SkyPilot job name is derived from the stable job key (``job_name(key)``), so after a restart
  ``find(spec)`` lists the managed jobs and finds the job by its name (submission is idempotent on the key);
  before that it waits for a launch of that name the API server is still processing (a service that died
  waiting for ``sky.jobs.launch`` left it in flight, and its job is not in the queue until it finishes);
- the handle records SkyPilot's job id; ``watch`` polls the job's status and follows its logs, turning progress
  lines into ``Progress``, every line into ``Output``, the ``SWEEP_RESULT`` line into the result, a preemption
  into an ``Output`` note (SkyPilot recovers the job; progress may repeat), and the final status into
  ``Exited``;
- ``cancel`` cancels the SkyPilot job.

At scale: launches in flight are bounded (``max_launches_in_flight``), all watchers share one batched status read
per poll interval (``_StatusBoard``), at most ``max_log_streams`` logs are followed live (the other jobs' logs are
read once when they end), and a failing SDK call is retried with exponential backoff and full jitter.
With ``checkpoint_bucket`` each job mounts ``<bucket>/<run>/checkpoints`` (``sky.Storage``, MOUNT) at its
``train_dir/<run>/checkpoints``, and a finished train job's checkpoints are synced down to the service's
``./train_dir/<run>/checkpoints`` before its exit is reported, so a local eval reads them (hybrid mode).

Every SDK call goes through ``SkySDK`` (the seam: the handful of calls used here, returning SkyPilot's own
records) and runs in a worker thread behind a limiter, never on the event loop. The seam is selectable with
the ``sdk`` option (an import path) so tests can run whole sweeps against a fake with the same interface.

Users who launch through their own script (e.g. a ``devops/skypilot/launch.py``) set ``command_template``:
the dispatcher runs that command (an argv list, no shell) and then finds and follows the managed job it
launched by name, exactly like one it launched itself.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from dispatchers.base import DispatcherError
from dispatchers.skypilot_options import _SECRET_NAME, SkyPilotOptions, cluster_name_for, job_name, parse_options
from dispatchers.skypilot_sdk import SkySDK, launch_request_job_name, load_sdk
from orchestrator.core.contract import ContractReader
from orchestrator.core.jobs import JobHandle, JobSpec, JobUpdate, Output, Progress, Started

# By concern: skypilot_options (options, job and cluster names), skypilot_sdk (the seam: every SDK call), this
# module (the job life cycle and log following). Their public names are importable from here.
__all__ = [
    "SkyPilotDispatcher",
    "SkyPilotOptions",
    "SkySDK",
    "cluster_name_for",
    "job_name",
    "launch_request_job_name",
    "load_sdk",
    "parse_options",
]

# --------------------------------------------------------------------------------------------------------------
# What the watcher needs to know about a job, whichever way it was launched.


@dataclass(frozen=True)
class _Snapshot:
    status: str  # SkyPilot's status name
    started: bool
    terminal: bool
    succeeded: bool
    recovery_count: int = 0
    duration: float | None = None
    reason: str | None = None


def _managed_snapshot(record: Any) -> _Snapshot:
    from sky.jobs import ManagedJobStatus as S

    status = record.status
    if status is None:
        return _Snapshot("UNKNOWN", False, False, False)
    started = status in (S.RUNNING, S.WINDING_DOWN, S.SUCCEEDED, S.FAILED, S.RECOVERING) or bool(record.start_at)
    reason = record.failure_reason or None
    if status.is_terminal() and status != S.SUCCEEDED and not reason:
        reason = {
            S.CANCELLED: "the SkyPilot job was cancelled",
            S.FAILED: "the job exited with a non-zero code",
            S.FAILED_SETUP: "the setup commands failed",
            S.FAILED_NO_RESOURCE: "SkyPilot found no resources matching the request",
            S.FAILED_PRECHECKS: "SkyPilot's prechecks failed",
            S.FAILED_CONTROLLER: "SkyPilot's jobs controller failed",
        }.get(status, status.value)
    return _Snapshot(
        status.value,
        started,
        status.is_terminal(),
        status == S.SUCCEEDED,
        int(record.recovery_count or 0),
        record.job_duration,
        reason,
    )


def _cluster_snapshot(record: Any) -> _Snapshot:
    from sky import JobStatus as S

    status = record.status
    terminal = status.is_terminal()
    started = status in (S.RUNNING, S.SUCCEEDED, S.FAILED) or bool(record.start_at)
    duration = None
    if record.start_at:
        duration = (record.end_at or time.time()) - record.start_at
    reason = None
    if terminal and status != S.SUCCEEDED:
        reason = {
            S.CANCELLED: "the SkyPilot job was cancelled",
            S.FAILED: "the job exited with a non-zero code",
            S.FAILED_SETUP: "the setup commands failed",
            S.FAILED_DRIVER: "SkyPilot's job driver failed",
        }.get(status, status.value)
    return _Snapshot(status.value, started, terminal, status == S.SUCCEEDED, 0, duration, reason)


def _exit_code(snap: _Snapshot) -> int | None:
    if snap.succeeded:
        return 0
    if snap.status in ("FAILED", "FAILED_SETUP"):
        return 1
    return None  # never ran to an exit: cancelled, no resources, controller failure


# --------------------------------------------------------------------------------------------------------------


class SkyPilotDispatcher:
    """Runs jobs as SkyPilot managed jobs (default) or as jobs on a cluster. See the module docstring."""

    def __init__(self, name: str = "skypilot", **options: Any) -> None:
        self.name = name
        self.options = parse_options(options)
        self._calls = anyio.CapacityLimiter(self.options.max_concurrent_calls)
        self._streams = anyio.CapacityLimiter(self.options.max_log_streams)
        self._launches = anyio.CapacityLimiter(self.options.max_launches_in_flight)
        self._open_streams = 0  # log streams being followed (at most max_log_streams)
        self._board = _StatusBoard(self)
        self._locks: dict[str, anyio.Lock] = {}
        self._sdk: Any = None
        self._check_resources()  # bad gpus/cloud/region fail at start-up, not at the first job

    # --- the seam, off the event loop

    @property
    def sdk(self) -> Any:
        if self._sdk is None:
            self._sdk = load_sdk(self.options.sdk, self.options.sdk_options)
        return self._sdk

    async def _call(
        self, method: str, *args: Any, limiter: anyio.CapacityLimiter | None = None, retry: bool = True, **kwargs: Any
    ) -> Any:
        """One SDK call in a worker thread. An API error (a dropped connection, a busy or restarting API server)
        is retried ``api_retries`` times with exponential backoff and full jitter, so a thousand watchers do not
        retry in lockstep; the last error is raised."""

        def run() -> Any:
            return getattr(self.sdk, method)(*args, **kwargs)

        attempt = 0
        while True:
            try:
                return await anyio.to_thread.run_sync(run, limiter=limiter or self._calls)
            except DispatcherError:
                raise
            except Exception:
                if not retry or attempt >= self.options.api_retries:
                    raise
                await anyio.sleep(random.uniform(0, self.options.api_backoff * 2**attempt))
                attempt += 1

    # --- building the task

    def _check_resources(self) -> None:
        try:
            self.resources()
        except DispatcherError:
            raise
        except Exception as exc:  # SkyPilot's own validation of accelerators, cloud, region
            raise DispatcherError(f"invalid SkyPilot options (gpus/cloud/region): {exc}") from None

    def resources(self) -> Any:
        import sky

        opts = self.options
        kwargs: dict[str, Any] = {"use_spot": opts.use_spot}
        if opts.gpus:
            kwargs["accelerators"] = opts.gpus
        if opts.infra:
            kwargs["infra"] = opts.infra
        if opts.launch_mode == "managed" and opts.max_restarts_on_errors:
            kwargs["job_recovery"] = {"max_restarts_on_errors": opts.max_restarts_on_errors}
        return sky.Resources(**kwargs)

    def remote_argv(self, spec: JobSpec) -> list[str]:
        argv = list(spec.argv)
        if argv and argv[0] in (sys.executable, os.path.realpath(sys.executable)):
            argv[0] = self.options.python  # the service's interpreter path means nothing on the VM
        return argv

    def build_task(self, spec: JobSpec) -> Any:
        """The ``sky.Task`` for a job: its argv as the run command, its environment, the sweep's resources."""
        import sky

        opts = self.options
        envs: dict[str, str] = {}
        secrets: dict[str, str] = {}
        for key, value in {**opts.env, **spec.env}.items():
            (secrets if _SECRET_NAME.search(key) else envs)[key] = str(value)
        missing = [n for n in opts.secrets if n not in os.environ]
        if missing:
            raise DispatcherError(
                f"dispatcher_options.skypilot.secrets names {', '.join(missing)}, not set in the service's "
                "environment: export it before starting the sweep"
            )
        secrets.update({n: os.environ[n] for n in opts.secrets})
        task = sky.Task(
            name=job_name(spec.key),
            run=shlex.join(self.remote_argv(spec)),
            setup=opts.setup,
            envs=envs or None,
            secrets=secrets or None,
            workdir=opts.workdir,
            num_nodes=opts.nodes,
            file_mounts=dict(opts.file_mounts) or None,
        )
        task.set_resources(self.resources())
        if opts.checkpoint_bucket:
            from sky.data.storage import StorageMode

            source = self.checkpoint_uri(spec)
            task.set_storage_mounts(
                {self.remote_checkpoint_dir(spec): sky.Storage(source=source, mode=StorageMode.MOUNT)}
            )
        return task

    # --- checkpoints in a bucket (hybrid hand-over)

    def checkpoint_uri(self, spec: JobSpec) -> str:
        """Where a run's checkpoints live in the bucket: ``<checkpoint_bucket>/<run>/checkpoints``."""
        return f"{self.options.checkpoint_bucket}/{spec.run}/checkpoints"

    def remote_checkpoint_dir(self, spec: JobSpec) -> str:
        """The job contract's ``./train_dir/<run>/checkpoints`` on the VM: SkyPilot runs the job in
        ``~/sky_workdir`` when a workdir is synced, else in the home directory."""
        home = "~/sky_workdir" if self.options.workdir else "~"
        return f"{home}/train_dir/{spec.run}/checkpoints"

    async def _sync_checkpoints_down(self, spec: JobSpec) -> None:
        """Copy the run's checkpoints from the bucket to ``<cwd>/train_dir/<run>/checkpoints``, where the local eval
        reads them. Idempotent: after a restart it runs again and copies only what is missing."""
        local = Path(spec.cwd) / "train_dir" / spec.run / "checkpoints"
        await anyio.to_thread.run_sync(lambda: local.mkdir(parents=True, exist_ok=True))
        try:
            await self._call("sync_down", self.checkpoint_uri(spec), str(local))
        except Exception as exc:
            raise DispatcherError(
                f"the checkpoints of {spec.run} could not be synced down from {self.checkpoint_uri(spec)}: {exc}"
            ) from None

    def _cluster(self, spec: JobSpec) -> str:
        return self.options.cluster_name or cluster_name_for(spec.sweep)

    # --- the protocol

    async def find(self, spec: JobSpec) -> JobHandle | None:
        name = job_name(spec.key)
        if self.options.launch_mode == "cluster":
            cluster = self._cluster(spec)
            await self._await_launches(name, cluster)
            records = await self._call("cluster_jobs", cluster)
            ids = [r.job_id for r in records if r.job_name == name]
            return self._handle(spec, max(ids), cluster=cluster) if ids else None
        wanted = self._template_job_name(spec) if self.options.command_template else name
        await self._await_launches(wanted, None)
        # refresh: a stopped jobs controller is started again rather than reporting no jobs (no double runs)
        records = await self._call("managed_jobs", name=wanted, refresh=True)
        ids = [r.job_id for r in records if r.job_name == wanted and r.job_id is not None]
        return self._handle(spec, max(ids)) if ids else None

    async def submit(self, spec: JobSpec) -> JobHandle:
        lock = self._locks.setdefault(spec.key, anyio.Lock())
        async with lock:
            existing = await self.find(spec)
            if existing is not None:
                return existing
            if self.options.command_template:
                return await self._submit_with_template(spec)
            task = self.build_task(spec)
            if self.options.launch_mode == "cluster":
                cluster = self._cluster(spec)
                job_id = await self._call(  # not retried blindly: a launch is not idempotent
                    "launch_cluster",
                    task,
                    cluster,
                    idle_minutes_to_autostop=self.options.idle_minutes_to_autostop,
                    limiter=self._launches,
                    retry=False,
                )
                if job_id is None:
                    raise DispatcherError(f"SkyPilot launched cluster {cluster!r} but submitted no job for {spec.key}")
                return self._handle(spec, job_id, cluster=cluster)
            return await self._launch_managed(spec, task)

    async def _launch_managed(self, spec: JobSpec, task: Any) -> JobHandle:
        """At most ``max_launches_in_flight`` launches at once (SkyPilot's controller launches a few per GiB of its
        memory; the rest would only queue on the API server). A launch that fails is looked for first (an API
        error can hide a launch that went through), then retried with backoff; the last error says why."""
        name = job_name(spec.key)
        for attempt in range(self.options.api_retries + 1):
            try:
                job_id = await self._call("launch_managed", task, name, limiter=self._launches, retry=False)
                return self._handle(spec, job_id)
            except Exception as exc:
                existing = await self.find(spec)
                if existing is not None:
                    return existing
                if attempt == self.options.api_retries:
                    raise DispatcherError(
                        f"SkyPilot refused to launch managed job {name!r}: {exc}. If its jobs controller is at its "
                        "limit, give it more memory or lower max_launches_in_flight (docs/dispatchers.md, "
                        "sizing for many parallel jobs)"
                    ) from None
                await anyio.sleep(random.uniform(0, self.options.api_backoff * 2**attempt))
        raise AssertionError("unreachable")

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        snap = await self._snapshot(handle)
        if snap is None or snap.terminal:
            return
        if handle.data.get("mode") == "cluster":
            await self._call("cancel_cluster", handle.data["cluster"], int(handle.data["job_id"]))
        else:
            await self._call("cancel_managed", int(handle.data["job_id"]))

    async def aclose(self) -> None:
        pass  # jobs keep running on SkyPilot; the API server is SkyPilot's own

    async def dry_run(self, spec: JobSpec) -> str:
        """Hand the job's task to SkyPilot's real ``sky.launch(..., dryrun=True)``: the client, the API server
        and the optimizer run (bad GPU names, clouds, regions fail here); nothing is provisioned.
        Used by ``python -m orchestrator dryrun``."""
        task = self.build_task(spec)
        cluster = self.options.cluster_name or cluster_name_for(spec.sweep)
        await self._call("launch_cluster", task, cluster, dryrun=True)
        return f"task {task.name}: {task.run}\nDry run of {spec.key} on {cluster}: finished"

    async def preflight(self) -> list[str]:
        """Before the first trial: a cloud must be enabled, or every job would fail to launch. ValueError if not."""
        clouds = await self._call("enabled_clouds")
        if not clouds:
            raise ValueError(
                "no cloud is enabled in SkyPilot, so no job could launch: set up credentials for a cloud and check "
                "them with `sky check` (or run the sweep with dispatcher_type=local)"
            )
        return [f"preflight: SkyPilot can launch on {', '.join(clouds)}"]

    async def api_server_running(self) -> bool | None:
        """Is SkyPilot's local API server up? (None: a remote one is configured.) Any SDK call starts it."""
        return await self._call("local_api_server_running")

    async def stop_api_server(self) -> None:
        await self._call("stop_local_api_server")

    def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        return self._watch(spec, handle)

    # --- internals

    async def _await_launches(self, name: str, cluster: str | None) -> None:
        """Wait for launches of this job that the API server is still processing.

        A job is in SkyPilot's queue only once its launch request has finished (for a managed job that can take
        minutes when the jobs controller has to start). A service that died while waiting for the launch left
        the request running on the API server: looking only at the queue, its successor would launch the job a
        second time. So ``find`` first waits for such a request to finish, then reads the queue. This order has
        no gap: a request that finishes between the two calls has put its job in the queue. (A launch still on
        its way to the API server when the service died never started; the lease rules out a second service
        launching concurrently.)"""
        records = await self._call("requests_in_flight")
        for record in records:
            if launch_request_job_name(record) == (name, cluster):
                await self._call("wait_request", record.request_id)

    def _handle(self, spec: JobSpec, job_id: int, cluster: str | None = None) -> JobHandle:
        data: dict[str, Any] = {"job_id": int(job_id), "mode": "cluster" if cluster else "managed"}
        if cluster:
            data["cluster"] = cluster
            data["job_name"] = job_name(spec.key)
        else:
            data["job_name"] = self._template_job_name(spec) if self.options.command_template else job_name(spec.key)
        return JobHandle(key=spec.key, dispatcher=self.name, data=data)

    def _values(self, spec: JobSpec) -> dict[str, str]:
        gpus = self.options.gpus or ""
        gpu_type, _, count = gpus.partition(":")
        return {
            "job_name": job_name(spec.key),
            "key": spec.key,
            "run": spec.run,
            "kind": spec.kind,
            "trial": str(spec.trial),
            "attempt": str(spec.attempt),
            "sweep": spec.sweep,
            "gpus": gpus,
            "gpu_type": gpu_type,
            "gpu_count": count or ("1" if gpu_type else "0"),
            "nodes": str(self.options.nodes),
            "cloud": self.options.cloud or "",
            "region": self.options.region or "",
        }

    def _template_job_name(self, spec: JobSpec) -> str:
        return self.options.command_job_name.format(**self._values(spec))

    def template_argv(self, spec: JobSpec) -> list[str]:
        values = self._values(spec)
        argv: list[str] = []
        for item in self.options.command_template or []:
            if item == "{argv}":
                argv.extend(self.remote_argv(spec))
            elif item == "{no_spot}":
                argv.extend([] if self.options.use_spot else ["--no-spot"])
            else:
                argv.append(item.format(**values))
        return argv

    async def _submit_with_template(self, spec: JobSpec) -> JobHandle:
        argv = self.template_argv(spec)
        env = {**os.environ, **self.options.env, **spec.env}
        try:
            proc = await anyio.run_process(argv, cwd=spec.cwd, env=env, check=False, stdin=None)
        except OSError as exc:
            raise DispatcherError(f"command_template could not run {argv[0]!r}: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or b"").decode(errors="replace").strip().splitlines()[-5:]
            raise DispatcherError(
                f"the launch command exited with code {proc.returncode}: {' | '.join(tail) or 'no output'}"
            )
        handle = await self.find(spec)
        if handle is None:
            raise DispatcherError(
                f"the launch command succeeded but SkyPilot has no managed job named "
                f"{self._template_job_name(spec)!r}: make command_template launch it with that name "
                "(command_job_name says which name to look for)"
            )
        return handle

    async def _snapshot(self, handle: JobHandle, batched: bool = False) -> _Snapshot | None:
        job_id = int(handle.data["job_id"])
        if handle.data.get("mode") == "cluster":
            records = await self._call("cluster_jobs", handle.data["cluster"])
            match = [r for r in records if r.job_id == job_id]
            return _cluster_snapshot(match[0]) if match else None
        if batched:  # the watchers' reads: one queue call per interval for all of them
            record = await self._board.read(job_id)
            return _managed_snapshot(record) if record is not None else None
        records = await self._call("managed_jobs", job_ids=[job_id])
        match = [r for r in records if r.job_id == job_id]
        return _managed_snapshot(match[0]) if match else None

    def _open_logs(self, handle: JobHandle, follow: bool = True) -> Iterator[str | None]:
        job_id = int(handle.data["job_id"])
        if handle.data.get("mode") == "cluster":
            return self.sdk.tail_cluster_logs(handle.data["cluster"], job_id, follow=follow)
        return self.sdk.tail_managed_logs(job_id, follow=follow)

    async def _watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        job_id = int(handle.data["job_id"])
        try:
            async for update in self._watch_job(spec, handle):
                yield update
        finally:
            self._board.forget(job_id)

    async def _watch_job(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        poll = self.options.poll_interval
        started = False
        recoveries: int | None = None
        reader = ContractReader()
        t0 = time.monotonic()

        def on_snapshot(snap: _Snapshot) -> list[JobUpdate]:
            nonlocal started, recoveries
            out: list[JobUpdate] = []
            if snap.started and not started:
                started = True
                out.append(Started())
            if recoveries is not None and snap.recovery_count > recoveries:
                out.append(
                    Output(
                        f"[skypilot] job {handle.data['job_id']} was preempted and SkyPilot recovered it "
                        f"(recovery {snap.recovery_count}); progress restarts from its last checkpoint"
                    )
                )
            recoveries = snap.recovery_count
            return out

        async def snapshot() -> _Snapshot:
            snap = await self._snapshot(handle, batched=True)
            if snap is None:
                raise DispatcherError(f"SkyPilot no longer knows job {handle.data['job_id']} ({spec.key})")
            return snap

        def read(line: str) -> list[JobUpdate]:
            nonlocal started
            out: list[JobUpdate] = []
            for update in reader.read(line.rstrip("\r\n")):
                if isinstance(update, Progress) and not started:
                    started = True
                    out.append(Started())
                out.append(update)
            return out

        # 1. Until the job runs: poll its status (logs before that are SkyPilot's provisioning chatter).
        snap = await snapshot()
        for update in on_snapshot(snap):
            yield update
        while not snap.started and not snap.terminal:
            await anyio.sleep(poll)
            snap = await snapshot()
            for update in on_snapshot(snap):
                yield update

        # 2. Follow the logs until the stream ends (SkyPilot ends it when the job is done, and keeps it open
        #    across a preemption and recovery), if one of the max_log_streams is free: a thousand open streams
        #    would tie up a thousand connections and threads. Status is read between lines to notice
        #    recoveries. A dropped stream is reopened from the start: progress may repeat, the result is read
        #    again. A job without a stream is watched by status only and its logs are read once at its end.
        follow = not snap.terminal and self._open_streams < self.options.max_log_streams
        if follow:
            self._open_streams += 1
        last_poll = time.monotonic()
        failures = 0
        try:
            while True:
                if not follow:
                    while not snap.terminal:
                        await anyio.sleep(poll)
                        snap = await snapshot()
                        for update in on_snapshot(snap):
                            yield update
                try:
                    lines = await anyio.to_thread.run_sync(self._open_logs, handle, follow, limiter=self._calls)
                    while True:
                        line = await anyio.to_thread.run_sync(
                            _next_line, lines, abandon_on_cancel=True, limiter=self._streams
                        )
                        if line is _END:
                            break
                        if line is None:
                            continue
                        failures = 0
                        for update in read(line):
                            yield update
                        if follow and time.monotonic() - last_poll >= poll:
                            last_poll = time.monotonic()
                            for update in on_snapshot(await snapshot()):
                                yield update
                    break  # the stream ended: the job is done (or about to be)
                except DispatcherError:
                    raise
                except Exception as exc:  # a dropped connection, a restarted API server
                    failures += 1
                    if failures > 5:
                        yield Output(f"[skypilot] giving up on the logs of job {handle.data['job_id']}: {exc}")
                        break
                    yield Output(f"[skypilot] log stream of job {handle.data['job_id']} broke ({exc}); following again")
                    await anyio.sleep(self.options.log_reopen_delay)
        finally:
            if follow:
                self._open_streams -= 1
        snap = await snapshot()
        for update in on_snapshot(snap):
            yield update

        # 3. The stream ended: wait for the final status (it can lag the end of the logs by a poll or two).
        while not snap.terminal:
            await anyio.sleep(poll)
            snap = await snapshot()
            for update in on_snapshot(snap):
                yield update
        if snap.succeeded and spec.kind == "train" and self.options.checkpoint_bucket:
            yield Output(f"[skypilot] syncing the checkpoints of {spec.run} down from {self.checkpoint_uri(spec)}")
            await self._sync_checkpoints_down(spec)  # before Exited: the eval starts only after it
        duration = snap.duration if snap.duration is not None else time.monotonic() - t0
        error = None if snap.succeeded else f"SkyPilot job {handle.data['job_id']} {snap.status}: {snap.reason}"
        yield reader.exited(_exit_code(snap), float(duration), error)


class _StatusBoard:
    """The statuses of all watched managed jobs, read with ONE ``sky.jobs.queue`` call per poll interval.

    Every watcher asks ``read(job_id)``; the first to ask becomes this round's reader: it waits until the interval
    since the last read has passed, then reads the queue for every job asked about so far, and all waiting
    watchers take their record from that one answer."""

    def __init__(self, dispatcher: SkyPilotDispatcher) -> None:
        self._dispatcher = dispatcher
        self._wanted: set[int] = set()
        self._records: dict[int, Any] = {}
        self._covered: set[int] = set()
        self._error: BaseException | None = None
        self._round: anyio.Event | None = None
        self._last = -float("inf")

    def forget(self, job_id: int) -> None:
        self._wanted.discard(job_id)
        self._records.pop(job_id, None)
        self._covered.discard(job_id)

    async def read(self, job_id: int) -> Any | None:
        self._wanted.add(job_id)
        self._covered.discard(job_id)  # a fresh read: not the answer of a round that ended before this call
        while job_id not in self._covered:
            if self._round is None:
                await self._read_round()
            else:
                await self._round.wait()
            if self._error is not None and job_id not in self._covered:
                raise self._error
        return self._records.get(job_id)

    async def _read_round(self) -> None:
        done = self._round = anyio.Event()
        try:
            await anyio.sleep(max(0.0, self._last + self._dispatcher.options.poll_interval - time.monotonic()))
            ids = sorted(self._wanted)
            self._error = None
            try:
                records = await self._dispatcher._call("managed_jobs", job_ids=ids)
            except Exception as exc:  # after the retries: every watcher of this round sees it
                self._error = exc
                return
            self._last = time.monotonic()
            self._records = {}
            for record in records:
                self._records.setdefault(record.job_id, record)  # a job group: its first task speaks for it
            self._covered = set(ids)
        finally:
            self._round = None
            done.set()


_END = object()


def _next_line(lines: Iterator[str | None]) -> Any:
    return next(lines, _END)
