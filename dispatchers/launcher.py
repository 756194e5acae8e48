"""The local job launcher: a tiny supervisor that runs one job and records everything about it in its job directory.

Usage::

    python -m dispatchers.launcher JOB_DIR [--key KEY] [--timeout SECONDS] [--kill-grace SECONDS] -- ARGV...

The local dispatcher starts it in a new session, so the job outlives the service; a restarted service finds the
job again from these files alone:

- ``claim``          created with O_CREAT|O_EXCL before anything runs: a second launcher for the same directory
                     exits at once (exit code 17) without running anything, so submission is idempotent.
                     Holds the launcher's pid and process start ticks (for liveness checks robust to pid reuse).
- ``launcher.json``  written atomically once the job is started: launcher and job pids with their start ticks,
                     start time, argv, cwd. ``job_pid`` is null when the program could not be started.
- ``output.log``     the job's stdout and stderr.
- ``exit.json``      written atomically when the job has ended: exit code (negative: killed by that signal),
                     end time, duration, whether it timed out, an error when it could not be started.
- ``launcher.log``   the launcher's own stderr (empty unless the launcher itself failed).
- ``stop.json``      written by the dispatcher when it cancels the job or enforces its timeout (the reason); a
                     launcher that finds it before starting the job records "cancelled before it started".

The job runs in its own process group (its pgid is its pid): SIGTERM/SIGINT/SIGHUP sent to the launcher are
forwarded to that group, a timeout stops the whole group (SIGTERM, then SIGKILL after the grace period), and
any process of the group still alive after the job's main process exited is killed before ``exit.json`` is
written, so ``output.log`` is complete when ``exit.json`` appears.

On Linux the launcher is also a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): a descendant that leaves the
job's process group (``setsid``, a double fork) is reparented to the launcher rather than to init when its parent
dies, and is killed with the rest once the job has ended, whether it exited, timed out or was cancelled. (A job
can still escape by killing its launcher; nothing short of a cgroup prevents that.)

Standard library only, so it starts fast (the dispatcher runs it with ``python -I -S``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

ALREADY_CLAIMED = 17  # exit status when another launcher already owns the job directory
USAGE = "usage: python -m dispatchers.launcher JOB_DIR [--key KEY] [--timeout S] [--kill-grace S] -- ARGV..."


def proc_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None. With the pid it identifies a
    process uniquely: a reused pid has a later start."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def write_json_atomic(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parse(args: list[str]) -> tuple[str, dict[str, str], list[str]]:
    if "--" not in args:
        raise SystemExit(USAGE)
    sep = args.index("--")
    head, argv = args[:sep], args[sep + 1 :]
    if not head or not argv:
        raise SystemExit(USAGE)
    job_dir, opts = head[0], {}
    rest = head[1:]
    if len(rest) % 2:
        raise SystemExit(USAGE)
    for name, value in zip(rest[::2], rest[1::2]):
        if name not in ("--key", "--timeout", "--kill-grace"):
            raise SystemExit(f"unknown option {name}\n{USAGE}")
        opts[name[2:]] = value
    return job_dir, opts, argv


class _Cancelled(Exception):
    pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children(pid: int) -> list[int]:
    """Live children of ``pid`` (Linux /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
                if int(data[data.rindex(b")") + 2 :].split()[1]) == pid:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def kill_orphans(rounds: int = 100) -> None:
    """SIGKILL and reap every remaining child: the job's descendants that were reparented to this subreaper. Each
    one killed hands its own children to us in turn, so go on until none is left."""
    me = os.getpid()
    for _ in range(rounds):
        kids = _children(me)
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def main(args: list[str] | None = None) -> int:
    job_dir, opts, argv = _parse(sys.argv[1:] if args is None else args)
    job_dir = os.path.abspath(job_dir)
    timeout = float(opts["timeout"]) if opts.get("timeout") else None
    kill_grace = float(opts.get("kill-grace") or 10.0)
    os.makedirs(job_dir, exist_ok=True)
    path = lambda name: os.path.join(job_dir, name)  # noqa: E731

    # 1. Claim the directory: exactly one launcher ever runs a job here.
    try:
        fd = os.open(path("claim"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        print(f"launcher: {job_dir} is already claimed; not starting anything", file=sys.stderr)
        return ALREADY_CLAIMED
    me = os.getpid()
    claim = {
        "key": opts.get("key"),
        "launcher_pid": me,
        "launcher_ticks": proc_start_ticks(me),
        "claimed_at": time.time(),
    }
    with os.fdopen(fd, "w") as f:
        json.dump(claim, f)

    # 2. Signals to the launcher go to the job's process group (or wait until the job exists).
    state: dict = {"job": None, "pending": [], "timed_out": False, "killed": False}

    def forward(signum: int, _frame: object) -> None:
        job = state["job"]
        if job is None:
            state["pending"].append(signum)
        else:
            _killpg(job.pid, signum)

    def on_alarm(_signum: int, _frame: object) -> None:
        job = state["job"]
        if job is None:
            return
        if not state["timed_out"]:
            state["timed_out"] = True
            _killpg(job.pid, signal.SIGTERM)
            signal.setitimer(signal.ITIMER_REAL, max(kill_grace, 0.01))
        else:
            state["killed"] = True
            _killpg(job.pid, signal.SIGKILL)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGALRM, on_alarm)

    # 3. Start the job: an argv list, never a shell; its own process group; output to output.log.
    subreaper = become_subreaper()
    info = {
        "key": opts.get("key"),
        "launcher_pid": me,
        "launcher_ticks": claim["launcher_ticks"],
        "job_pid": None,
        "job_ticks": None,
        "started_at": time.time(),
        "argv": argv,
        "cwd": os.getcwd(),
        "timeout": timeout,
    }
    t0 = time.monotonic()
    with open(path("output.log"), "ab") as out:
        try:
            if os.path.exists(path("stop.json")):  # cancelled before it could start
                raise _Cancelled()
            job = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, process_group=0)
        except _Cancelled:
            write_json_atomic(path("launcher.json"), info)
            write_json_atomic(
                path("exit.json"),
                {
                    "exit_code": None,
                    "signal": None,
                    "ended_at": time.time(),
                    "duration": 0.0,
                    "timed_out": False,
                    "error": "cancelled before it started",
                },
            )
            return 1
        except (OSError, ValueError) as exc:
            msg = f"could not start the job: {exc}"
            out.write(f"[launcher] {msg}\n".encode())
            out.flush()
            write_json_atomic(path("launcher.json"), info)
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            write_json_atomic(
                path("exit.json"),
                {
                    "exit_code": code,
                    "signal": None,
                    "ended_at": time.time(),
                    "duration": 0.0,
                    "timed_out": False,
                    "error": msg,
                },
            )
            return code
    state["job"] = job
    info["job_pid"] = job.pid
    info["job_ticks"] = proc_start_ticks(job.pid)
    write_json_atomic(path("launcher.json"), info)
    for signum in state["pending"]:
        _killpg(job.pid, signum)
    if timeout is not None:
        signal.setitimer(signal.ITIMER_REAL, max(timeout - (time.monotonic() - t0), 0.01))

    # 4. Wait (blocking waitpid: no polling), then make sure nothing of the job's group outlives it.
    rc = job.wait()
    signal.setitimer(signal.ITIMER_REAL, 0)
    duration = time.monotonic() - t0
    _killpg(job.pid, signal.SIGKILL)
    if subreaper:
        kill_orphans()
    write_json_atomic(
        path("exit.json"),
        {
            "exit_code": rc,
            "signal": -rc if rc < 0 else None,
            "ended_at": time.time(),
            "duration": duration,
            "timed_out": state["timed_out"],
            "error": None,
        },
    )
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
