"""The local dispatcher: jobs are real subprocesses on this machine, supervised by ``dispatchers/launcher.py``.

Each job has a directory, ``<log_dir>/<kind>.<attempt>`` (``log_dir`` is the run's ``train_dir/<sweep>/<run>``;
a relative one is taken relative to the job's ``cwd``). The launcher claims it, runs the job, and records
everything there (``claim``, ``launcher.json``, ``output.log``, ``exit.json``; see ``dispatchers/launcher.py``),
so the job is found again by its key after the service restarts, whether it is still running or finished while
the service was down. The service holds no state a restart would lose.

Jobs run in their own session (``start_new_session``): Ctrl-C or ``kill -9`` of the service does not stop them.
Watching is file polling, made cheap for hundreds of jobs: a ``stat`` per file per tick, reads only of new
bytes, and a poll interval that backs off while nothing changes (up to ``poll_interval``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from dispatchers.tail import Tail, decode
from orchestrator.core.contract import ContractReader
from orchestrator.core.failures import TAIL_LINES, exit_status, quote_output, timed_out
from orchestrator.core.files import write_atomic
from orchestrator.core.jobs import Exited, JobHandle, JobSpec, JobUpdate, Started

LAUNCHER = str(Path(__file__).with_name("launcher.py"))
LOST_LAUNCHER = "the job's launcher died without recording an exit status"

_LIVENESS_EVERY = 1.0  # seconds between two launcher liveness checks of one job
_HAVE_PROC = os.path.isdir("/proc/self")


class LocalDispatcher:
    """Run jobs as local subprocesses. ``poll_interval`` caps the watch interval; ``kill_grace`` is the time
    between SIGTERM and SIGKILL when a job is cancelled or times out."""

    def __init__(
        self,
        name: str = "local",
        poll_interval: float = 0.25,
        kill_grace: float = 10.0,
        python: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.poll_interval = poll_interval
        self.kill_grace = kill_grace
        self.python = python or sys.executable
        self.start_timeout = start_timeout
        self._min_interval = min(poll_interval, max(poll_interval / 8, 0.005))
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # our own launchers, to reap
        self._spawn_limiter = anyio.CapacityLimiter(4)

    # -- paths and handles ------------------------------------------------------------------------------------

    def job_dir(self, spec: JobSpec) -> Path:
        log_dir = Path(spec.log_dir)
        base = log_dir if log_dir.is_absolute() else Path(spec.cwd) / log_dir
        return Path(os.path.abspath(base / f"{spec.kind}.{spec.attempt}"))

    def _dir_of(self, spec: JobSpec, handle: JobHandle) -> Path:
        recorded = handle.data.get("job_dir")
        return Path(recorded) if recorded else self.job_dir(spec)

    def _handle(self, spec: JobSpec, d: Path) -> JobHandle:
        data: dict[str, Any] = {"job_dir": str(d)}
        claim = _read_json(d / "claim") or {}
        launcher = _read_json(d / "launcher.json") or {}
        for source in (claim, launcher):
            for k in ("launcher_pid", "launcher_ticks", "job_pid", "job_ticks", "started_at"):
                if source.get(k) is not None:
                    data[k] = source[k]
        return JobHandle(key=spec.key, dispatcher=self.name, data=data)

    # -- the protocol -----------------------------------------------------------------------------------------

    async def find(self, spec: JobSpec) -> JobHandle | None:
        d = self.job_dir(spec)
        if not (d / "claim").exists():
            return None
        claim = _read_json(d / "claim")
        if claim and claim.get("key") not in (None, spec.key):
            raise ValueError(f"{d} belongs to job {claim['key']!r}, not {spec.key!r}: two jobs share a directory")
        return self._handle(spec, d)

    async def submit(self, spec: JobSpec) -> JobHandle:
        if not spec.argv:
            raise ValueError(f"job {spec.key} has an empty argv")
        self._reap()
        d = self.job_dir(spec)
        if await self.find(spec) is not None:
            return await self._settled_handle(spec, d)
        try:
            proc = await anyio.to_thread.run_sync(self._spawn, spec, d, limiter=self._spawn_limiter)
        except OSError as exc:
            raise RuntimeError(f"could not start the launcher of {spec.key} (cwd {spec.cwd}): {exc}") from exc
        self._children[proc.pid] = proc
        # Handshake: the launcher has started the job once launcher.json names it.
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while True:
            launcher = _read_json(d / "launcher.json")
            if launcher and launcher.get("launcher_pid") == proc.pid:
                return self._handle(spec, d)
            rc = proc.poll()
            if rc is not None:
                self._children.pop(proc.pid, None)
                if (d / "claim").exists():  # ours (it ended quickly) or, with ALREADY_CLAIMED, another launcher's
                    return await self._settled_handle(spec, d)
                raise RuntimeError(
                    f"the launcher of {spec.key} failed (exit status {rc}) before claiming {d}:"
                    f" {_tail_text(d / 'launcher.log') or 'no message'}"
                )
            if time.monotonic() > deadline:  # slow machine: watch() sorts it out from the files
                h = self._handle(spec, d)
                return JobHandle(h.key, h.dispatcher, {"launcher_pid": proc.pid, **h.data})
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        return self._watch(spec, handle)

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        d = self._dir_of(spec, handle)
        if (d / "exit.json").exists() or not (d / "claim").exists():
            return
        write_atomic(d / "stop.json", json.dumps({"reason": "cancel", "at": time.time()}))
        await self._stop(d, handle)

    async def aclose(self) -> None:
        """Reap launchers that already ended. Running jobs keep running (a restarted service reattaches)."""
        self._reap()

    async def dry_run(self, spec: JobSpec) -> str:
        """What would run, after checking that the program exists (``python -m orchestrator dryrun``)."""
        program = spec.argv[0]
        found = shutil.which(program, path=os.environ.get("PATH")) if os.sep not in program else program
        if not found or not os.access(found, os.X_OK):
            raise ValueError(f"command: {program!r} is not an executable program here (check the sweep's `command`)")
        logs = Path(spec.log_dir) / f"{spec.kind}.{spec.attempt}"
        return f"{spec.key} would run in {spec.cwd}:\n  {shlex.join(spec.argv)}\nlogs in {logs}"

    # -- internals --------------------------------------------------------------------------------------------

    def _spawn(self, spec: JobSpec, d: Path) -> subprocess.Popen[bytes]:
        d.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so a Python job's progress reaches output.log as it happens
        env.update(spec.env)
        cmd = [self.python, "-I", "-S", LAUNCHER, str(d), "--key", spec.key, "--kill-grace", repr(self.kill_grace)]
        if spec.timeout is not None:
            cmd += ["--timeout", repr(float(spec.timeout))]
        cmd += ["--", *map(str, spec.argv)]
        with open(d / "launcher.log", "ab") as log:
            return subprocess.Popen(
                cmd,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    async def _settled_handle(self, spec: JobSpec, d: Path, wait: float = 5.0) -> JobHandle:
        """The existing job's handle, once its launcher has recorded the job (or is gone, or ``wait`` passed)."""
        deadline = time.monotonic() + wait
        while not (d / "launcher.json").exists() and time.monotonic() < deadline:
            if not self._launcher_alive(d, _read_json(d / "claim")):
                break
            await anyio.sleep(0.02)
        return self._handle(spec, d)

    def _launcher_alive(self, d: Path, *sources: dict[str, Any] | None) -> bool:
        """Whether the job's launcher still runs, identified by the first source (launcher.json, claim, handle
        data) that names it; re-reads the claim when none does."""
        if not any(s and s.get("launcher_pid") for s in sources):
            sources = (_read_json(d / "claim"),)
        for source in sources:
            if source and source.get("launcher_pid"):
                pid = int(source["launcher_pid"])
                proc = self._children.get(pid)
                if proc is not None:
                    if proc.poll() is None:
                        return True
                    del self._children[pid]
                    return False
                when = source.get("claimed_at") or source.get("started_at")
                return _alive(pid, source.get("launcher_ticks"), when)
        # Claimed, but the claim is still empty: only a launcher killed mid-claim leaves it so for long.
        try:
            return time.time() - (d / "claim").stat().st_mtime < 30.0
        except FileNotFoundError:
            return False

    async def _stop(self, d: Path, handle: JobHandle) -> None:
        """SIGTERM the job's process group, SIGKILL it after the grace period; return once it has ended (or its
        launcher is gone), or after the grace period plus a few seconds."""
        t0 = time.monotonic()
        termed = killed = False
        delay = 0.01
        while not (d / "exit.json").exists():
            now = time.monotonic()
            launcher = _read_json(d / "launcher.json") or {}
            job_pid: int = launcher.get("job_pid") or 0
            job_alive = bool(job_pid) and _alive(job_pid, launcher.get("job_ticks"), launcher.get("started_at"))
            if job_alive and not termed:
                _killpg(job_pid, signal.SIGTERM)
                termed = True
            elif job_alive and not killed and now - t0 >= self.kill_grace:
                _killpg(job_pid, signal.SIGKILL)
                killed = True
            if not job_alive and not self._launcher_alive(d, launcher, handle.data):
                return
            if now - t0 > self.kill_grace + 5.0:
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        d = self._dir_of(spec, handle)
        if not (d / "claim").exists():
            yield Exited(None, error=f"no job {spec.key} was found in {d} (it was never started there)")
            return
        tail = Tail(d / "output.log")
        last_lines: deque[str] = deque(maxlen=TAIL_LINES)
        reader = ContractReader()
        launcher: dict[str, Any] | None = None
        claim: dict[str, Any] | None = None
        next_liveness = time.monotonic() + _LIVENESS_EVERY
        backstop_sent = False
        interval = self._min_interval

        while True:
            changed = False
            exit_info = _read_json(d / "exit.json")  # before reading output: output.log is complete once it exists
            if launcher is None:
                launcher = _read_json(d / "launcher.json")
                if launcher is not None:
                    changed = True
                    if launcher.get("job_pid"):
                        yield Started()
            while True:
                lines = tail.read()
                if exit_info is not None and not tail.more():
                    lines += tail.flush()
                for line in lines:
                    changed = True
                    last_lines.append(line)
                    for update in reader.read(line):
                        yield update
                if exit_info is None or not tail.more():
                    break
                await anyio.sleep(0)

            if exit_info is not None:
                await self._reap_launcher(launcher)
                yield self._exited(spec, d, exit_info, launcher, reader, last_lines)
                return

            now = time.monotonic()
            if now >= next_liveness:
                next_liveness = now + _LIVENESS_EVERY
                if claim is None:
                    claim = _read_json(d / "claim")
                if not self._launcher_alive(d, launcher, claim, handle.data):
                    if (d / "exit.json").exists():
                        continue  # it ended normally in between
                    yield await self._lost(spec, d, handle, tail, last_lines)
                    return

            # Backstop for the timeout the launcher enforces itself (SIGTERM at the limit, SIGKILL after the grace).
            if spec.timeout is not None and launcher and launcher.get("job_pid") and not backstop_sent:
                started = float(launcher.get("started_at") or 0.0)
                if time.time() - started > spec.timeout + self.kill_grace + 5.0:
                    backstop_sent = True
                    write_atomic(d / "stop.json", json.dumps({"reason": "timeout", "at": time.time()}))
                    if _alive(launcher["job_pid"], launcher.get("job_ticks"), started):
                        _killpg(launcher["job_pid"], signal.SIGKILL)

            if tail.more():
                await anyio.sleep(0)
                continue
            interval = self._min_interval if changed else min(interval * 2, self.poll_interval)
            await anyio.sleep(interval)

    async def _reap_launcher(self, launcher: dict[str, Any] | None) -> None:
        """Our own launcher exits right after writing exit.json: wait (briefly, without blocking) to reap it."""
        proc = self._children.get(int(launcher.get("launcher_pid") or 0)) if launcher else None
        if proc is None:
            return
        with anyio.move_on_after(2.0):
            while proc.poll() is None:
                await anyio.sleep(0.005)
        if proc.returncode is not None:
            self._children.pop(proc.pid, None)

    def _exited(
        self,
        spec: JobSpec,
        d: Path,
        info: dict[str, Any],
        launcher: dict[str, Any] | None,
        reader: ContractReader,
        last_lines: deque[str],
    ) -> Exited:
        code = info.get("exit_code")
        duration = float(info.get("duration") or 0.0)
        result, bad_result = reader.result()
        errors = [bad_result] if bad_result else []
        stop = _read_json(d / "stop.json") or {}
        failed = code != 0
        if info.get("timed_out") or (stop.get("reason") == "timeout" and failed):
            limit = spec.timeout if spec.timeout is not None else (launcher or {}).get("timeout")
            errors.insert(0, timed_out(duration, limit, code))
        elif info.get("error"):
            errors.insert(0, str(info["error"]))
        elif stop.get("reason") == "cancel" and failed:
            errors.insert(0, f"cancelled after {duration:.1f} s; {exit_status(code)}")
        elif failed:
            errors.insert(0, exit_status(code))
        error = None
        if errors:
            error = "; ".join(errors)
            if failed:
                error += quote_output(last_lines, d / "output.log")
        return Exited(exit_code=code, result=result, duration=duration, error=error)

    async def _lost(self, spec: JobSpec, d: Path, handle: JobHandle, tail: Tail, last_lines: deque[str]) -> Exited:
        """The launcher is gone without exit.json: stop its orphaned job, if any, so nothing runs unsupervised."""
        launcher = _read_json(d / "launcher.json") or {}
        started = launcher.get("started_at") or handle.data.get("started_at")
        error = LOST_LAUNCHER
        job_pid = launcher.get("job_pid")
        if job_pid and _alive(job_pid, launcher.get("job_ticks"), started):
            _killpg(job_pid, signal.SIGTERM)
            with anyio.move_on_after(self.kill_grace):
                while _alive(job_pid, launcher.get("job_ticks"), started):
                    await anyio.sleep(0.05)
            if _alive(job_pid, launcher.get("job_ticks"), started):
                _killpg(job_pid, signal.SIGKILL)
            error += f" (its job, pid {job_pid}, was still running and has been stopped)"
        for line in tail.read_all():
            last_lines.append(line)
        note = _tail_text(d / "launcher.log")
        if note:
            error += f"; launcher.log: {note}"
        duration = time.time() - float(started) if started else 0.0
        error += quote_output(last_lines, d / "output.log")
        return Exited(exit_code=None, result=None, duration=duration, error=error)


# -- helpers -----------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON file's object; None when missing, empty or half-written."""
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start ticks) of a process from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def _alive(pid: int, ticks: int | None, recorded_at: float | None = None) -> bool:
    """Whether the process that was ``pid`` (started at ``ticks``) still runs: robust against pid reuse, and a
    zombie counts as dead. Without /proc, psutil's create time must not be later than when it was recorded."""
    pid = int(pid)
    if _HAVE_PROC:
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X", "x"):
            return False
        return ticks is None or stat[1] == int(ticks)
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return recorded_at is None or p.create_time() <= float(recorded_at) + 1.0
    except psutil.Error:
        return False


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(int(pgid), sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail_text(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return decode(f.read()).strip()
    except OSError:
        return ""
