"""The dispatcher conformance kit: the protocol's contract (dispatchers/base.py) checked against real jobs.

From a plugin's own pytest suite, in three lines::

    from orchestrator.core.testing import run_conformance

    def test_my_dispatcher_keeps_the_contract(tmp_path):
        run_conformance(lambda: MyDispatcher(name="mine"), tmp_path)

``factory`` is called once per dispatcher instance the kit needs: a second call stands for the service restarted
(a fresh instance must find the jobs of the first). The kit writes a small Python job script under ``workdir``
and runs it through the plugin in every way README's faulty-jobs table lists, several checks at once. Each broken
rule raises AssertionError naming what broke; all failures are reported together.

Checks a backend genuinely cannot pass (a cloud that reports "FAILED" but no signal) are named in ``skip``:
see ``CHECKS``.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from orchestrator.core.jobs import Exited, JobHandle, JobSpec, JobUpdate, Output, Progress, Started, job_key

_UPDATE_TYPES = (Started, Progress, Output, Exited)

_JOB = textwrap.dedent(
    """\
    # A job for the dispatcher conformance kit: python job.py MODE [DIR]
    import os, signal, sys, time
    mode = sys.argv[1]
    mark = sys.argv[2] if len(sys.argv) > 2 else None
    if mark:  # one line per run: the kit counts runs
        with open(os.path.join(mark, "runs"), "a") as f:
            f.write("run\\n")
    def say(line):
        print(line, flush=True)
    if mode == "result":
        say("hello from the job")
        say("Epoch 1 / 500 sps / 50.00% of 2.00 ksteps")
        say('SWEEP_RESULT {"score": 0.5, "cost": 2.0, "metrics": {"a": 1}}')
    elif mode == "fail":
        say("about to fail: error: the last words")
        sys.exit(7)
    elif mode == "silent":
        sys.exit(5)
    elif mode == "killed":
        say("about to be killed")
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "hang":
        say("ready")
        time.sleep(120)  # bounded: a plugin that cannot stop it leaves no process behind for long
    elif mode == "noresult":
        say("no result here")
    elif mode == "malformed":
        say("SWEEP_RESULT {not json")
    elif mode == "nan":
        say('SWEEP_RESULT {"score": NaN}')
    elif mode == "gate":  # runs until DIR/go exists, then reports
        say("ready")
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(mark, "go")) and time.time() < deadline:
            time.sleep(0.05)
        say('SWEEP_RESULT {"score": 1.0}')
    elif mode == "quick":  # ends at once, leaving DIR/done behind
        say('SWEEP_RESULT {"score": 2.0}')
        open(os.path.join(mark, "done"), "w").close()
    """
)


@dataclass
class Conformance:
    """The kit: ``await Conformance(factory, workdir).run()`` (or ``run_conformance`` from sync code)."""

    factory: Callable[[], Any]
    workdir: Path
    python: str = sys.executable
    skip: frozenset[str] = frozenset()
    limit: float = 90.0  # seconds any one check may take before it fails as hung
    concurrency: int = 4  # checks at once
    exact_reasons: bool = True  # False: a failed job must fail with some reason, not local's words (a cloud)
    errors: list[str] = field(default_factory=list)

    async def run(self) -> None:
        self.workdir = Path(self.workdir).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "job.py").write_text(_JOB)
        unknown = set(self.skip) - set(CHECKS)
        if unknown:
            raise ValueError(f"skip names no check: {sorted(unknown)}; the checks are {sorted(CHECKS)}")
        limiter = anyio.CapacityLimiter(self.concurrency)
        async with anyio.create_task_group() as tg:
            for name, check in CHECKS.items():
                if name not in self.skip:
                    tg.start_soon(self._one, name, check, limiter)
        if self.errors:
            raise AssertionError("the dispatcher broke the contract:\n- " + "\n- ".join(sorted(self.errors)))

    async def _one(self, name: str, check: Check, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            try:
                with anyio.fail_after(self.limit):
                    await check(self)
            except AssertionError as exc:
                self.errors.append(f"{name}: {exc}")
            except TimeoutError:
                self.errors.append(f"{name}: did not finish within {self.limit:g} s (a call or watch hangs)")
            except Exception as exc:  # a plugin's exception is a finding, not a crash of the kit
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    # -- building blocks for the checks ------------------------------------------------------------------------

    def spec(self, name: str, mode: str, *, timeout: float | None = None, marked: bool = False) -> JobSpec:
        run = f"conformance_{name}"
        args = [self.python, str(self.workdir / "job.py"), mode]
        if marked:
            mark = self.mark_dir(name)
            mark.mkdir(parents=True, exist_ok=True)
            args.append(str(mark))
        return JobSpec(
            key=job_key(run, "train", 1),
            sweep="conformance",
            run=run,
            trial=0,
            kind="train",
            attempt=1,
            argv=args,
            env={"PYTHONUNBUFFERED": "1"},
            cwd=self.workdir,
            log_dir=self.workdir / "train_dir" / "conformance" / run,
            timeout=timeout,
        )

    def mark_dir(self, name: str) -> Path:
        return self.workdir / "marks" / name

    def dispatcher(self) -> Any:
        d = self.factory()
        assert isinstance(getattr(d, "name", None), str), f"the factory made {d!r}, which has no str `name`"
        return d

    async def submit(self, d: Any, spec: JobSpec) -> JobHandle:
        handle = await d.submit(spec)
        self.check_handle(d, spec, handle, "submit()")
        assert isinstance(handle, JobHandle)
        return handle

    def check_handle(self, d: Any, spec: JobSpec, handle: Any, call: str) -> None:
        assert isinstance(handle, JobHandle), f"{call} returned {type(handle).__name__}, not a JobHandle"
        assert handle.key == spec.key, f"{call} returned a handle for key {handle.key!r}, not {spec.key!r}"
        try:
            json.dumps(handle.data)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{call} returned a handle whose data is not JSON-able ({exc})") from None
        assert handle.dispatcher == d.name, (
            f"{call} returned a handle of dispatcher {handle.dispatcher!r}, not {d.name!r}"
        )

    async def watch(self, d: Any, spec: JobSpec, handle: JobHandle, until: str | None = None) -> list[JobUpdate]:
        """Every update to the ``Exited`` (checked: right types, exactly one Exited, last); with ``until``, stop
        early once an ``Output`` containing it arrived."""
        updates: list[JobUpdate] = []
        agen = d.watch(spec, handle)
        try:
            async for update in agen:
                assert isinstance(update, _UPDATE_TYPES), (
                    f"watch() yielded {type(update).__name__}, not Started, Progress, Output or Exited"
                )
                assert not any(isinstance(u, Exited) for u in updates), "watch() yielded something after Exited"
                updates.append(update)
                if until is not None and isinstance(update, Output) and until in update.line:
                    return updates
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        assert until is None, f"watch() ended before the job printed {until!r}"
        assert updates and isinstance(updates[-1], Exited), "watch() ended without an Exited"
        return updates

    async def run_job(self, name: str, mode: str, **kw: Any) -> tuple[JobSpec, Exited, list[JobUpdate]]:
        d = self.dispatcher()
        try:
            spec = self.spec(name, mode, **kw)
            handle = await self.submit(d, spec)
            updates = await self.watch(d, spec, handle)
        finally:
            await d.aclose()
        exited = updates[-1]
        assert isinstance(exited, Exited)
        return spec, exited, updates

    def runs(self, name: str) -> int:
        try:
            return (self.mark_dir(name) / "runs").read_text().count("run")
        except FileNotFoundError:
            return 0


Check = Callable[[Conformance], Awaitable[None]]


def _reason(what: str, exited: Exited, expected: str) -> str:
    return f"reason for {what} was {exited.error!r} (exit code {exited.exit_code}), expected {expected}"


def _failed(kit: Conformance, exited: Exited, ok: bool, what: str, expected: str) -> None:
    """``ok`` judges local's exact reason; without ``exact_reasons`` any failure with a reason passes."""
    if not kit.exact_reasons:
        ok = exited.exit_code != 0 and bool(exited.error)
        expected = "a failure (exit code not 0) with a reason"
    assert ok, _reason(what, exited, expected)


# -- the checks ------------------------------------------------------------------------------------------------


async def check_result(kit: Conformance) -> None:
    _, exited, updates = await kit.run_job("result", "result")
    assert any(isinstance(u, Started) for u in updates), "watch() of a job that ran yielded no Started"
    lines = [u.line for u in updates if isinstance(u, Output)]
    assert any("hello from the job" in line for line in lines), f"no Output for the job's line; got {lines[:5]}"
    progress = [u for u in updates if isinstance(u, Progress)]
    assert progress, "no Progress for the line 'Epoch 1 / 500 sps / 50.00% of 2.00 ksteps'"
    assert math.isclose(progress[-1].step, 1000) and progress[-1].total == 2000, f"Progress was {progress[-1]}"
    assert exited.exit_code == 0, f"a job that succeeded exited with {exited.exit_code!r}, expected 0"
    expected = {"score": 0.5, "cost": 2.0, "metrics": {"a": 1}}
    assert exited.result == expected, f"result was {exited.result!r}, expected {expected!r}"
    assert exited.error is None, f"a job that succeeded has the error {exited.error!r}"


async def check_exit_nonzero(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("exit_nonzero", "fail")
    error = exited.error or ""
    ok = exited.exit_code == 7 and error.startswith("exited with code 7; last output (") and "the last words" in error
    _failed(kit, exited, ok, "a job that exited with code 7", "'exited with code 7; last output (<log>):' + its lines")


async def check_crash_silent(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("crash_silent", "silent")
    ok = exited.exit_code == 5 and (exited.error or "").startswith("exited with code 5 (it printed nothing; ")
    _failed(kit, exited, ok, "a job that crashed printing nothing", "'exited with code 5 (it printed nothing; <log>)'")


async def check_killed(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("killed", "killed")
    ok = exited.exit_code == -9 and (exited.error or "").startswith("killed by signal 9 (SIGKILL); last output (")
    _failed(
        kit, exited, ok, "a job killed by SIGKILL", "exit code -9 and 'killed by signal 9 (SIGKILL); last output ...'"
    )


async def check_cannot_start(kit: Conformance) -> None:
    d = kit.dispatcher()
    spec = replace(kit.spec("cannot_start", "result"), argv=["/nonexistent/bin/python3"])
    try:
        try:
            handle = await kit.submit(d, spec)
        except AssertionError:
            raise
        except Exception as exc:  # refusing at submit is fine: the service fails the job with this message
            assert "/nonexistent/bin/python3" in str(exc), f"submit() raised {exc!r}, which names not the program"
            return
        exited = (await kit.watch(d, spec, handle))[-1]
    finally:
        await d.aclose()
    assert isinstance(exited, Exited)
    error = exited.error or ""
    ok = exited.exit_code != 0 and "could not start the job" in error and "/nonexistent/bin/python3" in error
    _failed(kit, exited, ok, "a job that could not start", "'could not start the job: ... /nonexistent/bin/python3'")


async def check_timeout(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("timeout", "hang", timeout=1.0)
    ok = (
        exited.exit_code != 0
        and (exited.error or "").startswith("timed out after ")
        and "(limit 1 s)" in (exited.error or "")
    )
    _failed(kit, exited, ok, "a job hung past its 1 s timeout", "'timed out after N s (limit 1 s); killed by ...'")


async def check_no_result(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("no_result", "noresult")
    ok = exited.exit_code == 0 and exited.result is None and exited.error is None
    got = f"exit code {exited.exit_code}, result {exited.result!r}, error {exited.error!r}"
    assert ok, f"a job that printed no SWEEP_RESULT gave {got}; expected exit code 0, no result, no error"


async def check_malformed(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("malformed", "malformed")
    ok = exited.result is None and (exited.error or "").startswith(
        "malformed SWEEP_RESULT line: Expecting property name"
    )
    assert ok, _reason("a malformed SWEEP_RESULT", exited, "'malformed SWEEP_RESULT line: Expecting property name ...'")


async def check_nan_score(kit: Conformance) -> None:
    _, exited, _ = await kit.run_job("nan_score", "nan")
    ok = exited.result is None and "the reported score is nan, not a finite number" in (exited.error or "")
    assert ok, _reason(
        "a NaN score", exited, "'malformed SWEEP_RESULT line: the reported score is nan, not a finite number ...'"
    )


async def check_cancel(kit: Conformance) -> None:
    d = kit.dispatcher()
    try:
        spec = kit.spec("cancel", "hang")
        handle = await kit.submit(d, spec)
        await kit.watch(d, spec, handle, until="ready")
        await d.cancel(spec, handle)
        exited = (await kit.watch(d, spec, handle))[-1]
        assert isinstance(exited, Exited)
        assert exited.exit_code != 0 and exited.error, f"a cancelled job ended with {exited}, expected a failure"
        await d.cancel(spec, handle)  # on an ended job: must not raise
    finally:
        await d.aclose()


async def check_cancel_ended(kit: Conformance) -> None:
    d = kit.dispatcher()
    try:
        spec = kit.spec("cancel_ended", "result")
        handle = await kit.submit(d, spec)
        await kit.watch(d, spec, handle)
        await d.cancel(spec, handle)
    finally:
        await d.aclose()


async def check_idempotent(kit: Conformance) -> None:
    d = kit.dispatcher()
    try:
        spec = kit.spec("idempotent", "result", marked=True)
        first = await kit.submit(d, spec)
        second = await kit.submit(d, spec)
        assert second.key == first.key and second.data == first.data, (
            f"submit() twice on one key returned two handles: {first} and {second}"
        )
        found = await d.find(spec)
        assert found is not None, "find() returned None for a job that was submitted"
        kit.check_handle(d, spec, found, "find()")
        await kit.watch(d, spec, second)
    finally:
        await d.aclose()
    assert kit.runs("idempotent") == 1, f"submit() twice on one key ran the job {kit.runs('idempotent')} times"
    d = kit.dispatcher()
    try:
        await kit.submit(d, spec)  # after the job ended too
    finally:
        await d.aclose()
    assert kit.runs("idempotent") == 1, "submit() of an ended job's key ran it again"
    unknown = replace(spec, key=job_key("conformance_never_submitted", "train", 1), run="conformance_never_submitted")
    d = kit.dispatcher()
    try:
        assert await d.find(replace(unknown, log_dir=kit.workdir / "nowhere")) is None, (
            "find() returned a handle for a key that was never submitted"
        )
    finally:
        await d.aclose()


async def check_claim_race(kit: Conformance) -> None:
    """Two instances (a restarted service racing its predecessor) submit one key at once: the job runs once."""
    spec = kit.spec("claim_race", "result", marked=True)
    first, second = kit.dispatcher(), kit.dispatcher()
    handles: list[JobHandle] = []

    async def submit(d: Any) -> None:
        handles.append(await kit.submit(d, spec))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, first)
            tg.start_soon(submit, second)
        await kit.watch(first, spec, handles[0])
    finally:
        await first.aclose()
        await second.aclose()
    runs = kit.runs("claim_race")
    assert runs == 1, f"two instances submitting one key at once ran the job {runs} times (claim the key atomically)"


async def check_restart_running(kit: Conformance) -> None:
    first = kit.dispatcher()
    spec = kit.spec("restart_running", "gate", marked=True)
    try:
        handle = await kit.submit(first, spec)
        await kit.watch(first, spec, handle, until="ready")
    finally:
        await first.aclose()
    second = kit.dispatcher()
    try:
        found = await second.find(spec)
        assert found is not None, "find() after restart returned None for a running job"
        kit.check_handle(second, spec, found, "find() after restart")
        again = await kit.submit(second, spec)
        assert kit.runs("restart_running") == 1, "submit() after restart started a running job again"
        (kit.mark_dir("restart_running") / "go").touch()
        exited = (await kit.watch(second, spec, again))[-1]
    finally:
        await second.aclose()
    assert isinstance(exited, Exited)
    ok = exited.exit_code == 0 and exited.result == {"score": 1.0} and exited.error is None
    assert ok, f"a job that kept running across a restart ended as {exited}, expected exit 0 and score 1.0"


async def check_restart_ended(kit: Conformance) -> None:
    first = kit.dispatcher()
    spec = kit.spec("restart_ended", "quick", marked=True)
    try:
        await kit.submit(first, spec)
    finally:
        await first.aclose()  # nobody watches it end
    done = kit.mark_dir("restart_ended") / "done"
    second = kit.dispatcher()
    try:
        # find() until the job has ended (a backend that advances its jobs only when asked sees it asked here)
        while not done.exists():
            await second.find(spec)
            await anyio.sleep(0.1)
        await anyio.sleep(0.5)  # past its exit
        found = await second.find(spec)
        assert found is not None, "find() after restart returned None for a job that ended while nobody watched"
        kit.check_handle(second, spec, found, "find() after restart")
        exited = (await kit.watch(second, spec, found))[-1]
    finally:
        await second.aclose()
    assert isinstance(exited, Exited)
    ok = exited.exit_code == 0 and exited.result == {"score": 2.0}
    assert ok, f"a job that ended while nobody watched was reported as {exited}, expected exit 0 and score 2.0"


CHECKS: dict[str, Check] = {
    "result": check_result,
    "exit_nonzero": check_exit_nonzero,
    "crash_silent": check_crash_silent,
    "killed": check_killed,
    "cannot_start": check_cannot_start,
    "timeout": check_timeout,
    "no_result": check_no_result,
    "malformed": check_malformed,
    "nan_score": check_nan_score,
    "cancel": check_cancel,
    "cancel_ended": check_cancel_ended,
    "idempotent": check_idempotent,
    "claim_race": check_claim_race,
    "restart_running": check_restart_running,
    "restart_ended": check_restart_ended,
}
"""Every check by name (for ``skip``)."""


def run_conformance(
    factory: Callable[[], Any],
    workdir: Path | str,
    *,
    skip: tuple[str, ...] | frozenset[str] = (),
    python: str = sys.executable,
    limit: float = 90.0,
    exact_reasons: bool = True,
) -> None:
    """Run every check (but ``skip``) against dispatchers made by ``factory``; AssertionError naming each broken
    rule. ``python`` runs the kit's job script (on a cloud: the interpreter there)."""
    kit = Conformance(
        factory,
        Path(workdir),
        python=python,
        skip=frozenset(skip),
        limit=limit,
        exact_reasons=exact_reasons,
    )
    anyio.run(kit.run)
