"""The local dispatcher with real subprocesses: no mocks. Jobs are tiny Python scripts written into tmp_path; any
wait on a job is on a file it writes (never a sleep-and-hope), bounded by anyio.fail_after."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from dispatchers.base import Dispatcher
from dispatchers.local import LOST_LAUNCHER, LocalDispatcher, _alive, _proc_stat
from dispatchers.tail import Tail
from orchestrator.jobs import Exited, JobSpec, Output, Progress, Started, job_key

pytestmark = pytest.mark.anyio
PY = sys.executable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spec_for(tmp_path: Path, argv: list[str], *, run: str = "s_trial_0001", kind: str = "train", **kw) -> JobSpec:
    return JobSpec(
        key=job_key(run, kind, 1),
        sweep="s",
        run=run,
        trial=1,
        kind=kind,  # type: ignore[arg-type]
        attempt=1,
        argv=argv,
        cwd=tmp_path,
        log_dir=Path("train_dir") / "s" / run,
        **kw,
    )


def script(tmp_path: Path, body: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def dispatcher() -> LocalDispatcher:
    return LocalDispatcher(poll_interval=0.05, kill_grace=1.0)


async def collect(d: LocalDispatcher, spec: JobSpec, handle, limit: float = 20.0) -> list:
    updates = []
    with anyio.fail_after(limit):
        async for u in d.watch(spec, handle):
            updates.append(u)
    return updates


async def watch_until_waiting(d: LocalDispatcher, spec: JobSpec, handle, act) -> list:
    """Every update of the job; ``await act()`` once when it prints ``waiting`` (the WAIT_FOR_GO jobs)."""
    updates = []
    with anyio.fail_after(20):
        async for u in d.watch(spec, handle):
            updates.append(u)
            if isinstance(u, Output) and u.line == "waiting":
                await act()
    return updates


async def wait_for_file(path: Path, limit: float = 10.0) -> None:
    with anyio.fail_after(limit):
        while not path.exists():
            await anyio.sleep(0.01)


def only_exit(updates: list) -> Exited:
    exits = [u for u in updates if isinstance(u, Exited)]
    assert len(exits) == 1 and updates[-1] is exits[0], updates
    return exits[0]


def lines(updates: list) -> list[str]:
    return [u.line for u in updates if isinstance(u, Output)]


WAIT_FOR_GO = """
import os, sys, time
print("waiting", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
"""


async def test_is_a_dispatcher() -> None:
    assert isinstance(LocalDispatcher(), Dispatcher)


async def test_output_progress_and_result_are_collected(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import os, sys
        from orchestrator.contract import format_progress, report_result
        print("hello from", os.getcwd(), os.environ["MY_VAR"])
        print("to stderr", file=sys.stderr)
        for i in range(1, 51):
            print(format_progress(i, 700.0, i * 1000.0, 50_000.0))
        report_result({"score": 0.93, "cost": 4.5, "metrics": {"a": 1}})
        print("partial last line", end="")
        """,
    )
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job], env={"MY_VAR": "42", "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    handle = await d.submit(spec)
    assert handle.key == spec.key and handle.dispatcher == "local" and handle.data["job_pid"] > 0
    updates = await collect(d, spec, handle)

    assert isinstance(updates[0], Started) and sum(isinstance(u, Started) for u in updates) == 1
    out = lines(updates)
    assert out[0] == f"hello from {tmp_path} 42"
    assert "to stderr" in out
    assert out[-1] == "partial last line"
    progress = [u for u in updates if isinstance(u, Progress)]
    # every progress line, in order: the service, not the dispatcher, throttles what it logs
    assert [p.step for p in progress] == pytest.approx([i * 1000.0 for i in range(1, 51)])
    assert progress[-1] == Progress(step=50_000.0, total=50_000.0, sps=700.0)
    ex = only_exit(updates)
    assert ex.exit_code == 0 and ex.error is None and ex.duration > 0
    assert ex.result == {"score": 0.93, "cost": 4.5, "metrics": {"a": 1}}

    job_dir = tmp_path / "train_dir" / "s" / "s_trial_0001" / "train.1"
    assert {"claim", "launcher.json", "output.log", "exit.json"} <= {p.name for p in job_dir.iterdir()}
    assert json.loads((job_dir / "exit.json").read_text())["exit_code"] == 0
    assert handle.data["job_dir"] == str(job_dir)
    assert _proc_stat(handle.data["launcher_pid"]) is None  # our launcher was reaped: no zombie left behind


async def test_nonzero_exit_gives_an_actionable_error(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import sys
        print("loading config")
        print("ValueError: learning_rate must be positive", file=sys.stderr)
        sys.exit(3)
        """,
    )
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job])
    ex = only_exit(await collect(d, spec, await d.submit(spec)))
    assert ex.exit_code == 3 and ex.result is None
    assert ex.error.startswith("exited with code 3")
    assert "learning_rate must be positive" in ex.error and "loading config" in ex.error
    assert "output.log" in ex.error


async def test_malformed_result_line(tmp_path: Path) -> None:
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, "-c", "print('SWEEP_RESULT {\"score\": 1'); print('SWEEP_RESULT {oops')"])
    ex = only_exit(await collect(d, spec, await d.submit(spec)))
    assert ex.exit_code == 0 and ex.result is None
    assert ex.error.startswith("malformed SWEEP_RESULT line: ") and "{oops" in ex.error


async def test_same_key_submitted_twice_runs_once(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        """
        import os, time
        with open("runs.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")
        while not os.path.exists("go"):
            time.sleep(0.01)
        """,
    )
    spec = spec_for(tmp_path, [PY, job])
    d1, d2 = dispatcher(), dispatcher()  # the second one stands in for a restarted service re-submitting
    handles = []

    async def submit(d: LocalDispatcher) -> None:
        handles.append(await d.submit(spec))

    async with anyio.create_task_group() as tg:
        for d in (d1, d1, d2, d2):
            tg.start_soon(submit, d)
    handles.append(await d2.submit(spec))
    assert len({h.data["job_pid"] for h in handles}) == 1
    (tmp_path / "go").touch()
    ex = only_exit(await collect(d1, spec, handles[0]))
    assert ex.exit_code == 0
    assert len((tmp_path / "runs.txt").read_text().split()) == 1
    h = await d2.submit(spec)  # after the job ended: still the same job, nothing new runs
    assert h.data["job_pid"] == handles[0].data["job_pid"]
    await anyio.sleep(0.2)
    assert len((tmp_path / "runs.txt").read_text().split()) == 1
    with anyio.fail_after(10):  # every launcher we started is reaped (the winner may be d2's, watched by d1)
        while d1._children or d2._children:
            await d1.aclose()
            await d2.aclose()
            await anyio.sleep(0.01)


async def test_reattach_after_restart_to_a_running_job(tmp_path: Path) -> None:
    job = script(tmp_path, WAIT_FOR_GO + "print('SWEEP_RESULT {\"score\": 2.5}')\n")
    spec = spec_for(tmp_path, [PY, job])
    first = dispatcher()
    handle = await first.submit(spec)
    assert os.getsid(handle.data["job_pid"]) != os.getsid(0)  # its own session: survives the service
    await first.aclose()

    second = dispatcher()  # the restarted service knows only the spec
    assert await second.find(spec_for(tmp_path, [PY, job], run="s_trial_0002")) is None
    found = await second.find(spec)
    assert found is not None and found.data["job_pid"] == handle.data["job_pid"]

    async def act() -> None:
        (tmp_path / "go").touch()

    updates = await watch_until_waiting(second, spec, found, act)
    assert lines(updates)[0] == "waiting"
    ex = only_exit(updates)
    assert ex.exit_code == 0 and ex.result == {"score": 2.5}


async def test_collects_a_job_that_finished_while_nobody_watched(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, [PY, "-c", "print('one'); print('two'); print('SWEEP_RESULT {\"score\": 1}')"])
    first = dispatcher()
    handle = await first.submit(spec)
    job_dir = Path(handle.data["job_dir"])
    await wait_for_file(job_dir / "exit.json")
    await first.aclose()

    second = dispatcher()
    found = await second.find(spec)
    updates = await collect(second, spec, found)
    assert isinstance(updates[0], Started)
    assert lines(updates) == ["one", "two", 'SWEEP_RESULT {"score": 1}']
    ex = only_exit(updates)
    assert ex.exit_code == 0 and ex.result == {"score": 1}


async def test_launcher_killed_with_sigkill_is_a_lost_launcher(tmp_path: Path) -> None:
    job = script(tmp_path, WAIT_FOR_GO)
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job])
    handle = await d.submit(spec)
    job_pid, job_ticks = handle.data["job_pid"], handle.data["job_ticks"]

    async def act() -> None:
        os.kill(handle.data["launcher_pid"], signal.SIGKILL)

    updates = await watch_until_waiting(d, spec, handle, act)
    ex = only_exit(updates)
    assert ex.exit_code is None and ex.result is None
    assert ex.error.startswith(LOST_LAUNCHER) and "waiting" in ex.error
    assert not _alive(job_pid, job_ticks)  # the orphaned job does not run on unsupervised


async def test_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn job: needs the SIGKILL after the grace period
        child = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(120)"])
        open("child.pid", "w").write(str(child.pid))
        print("started a child", flush=True)
        time.sleep(120)
        """,
    )
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job], timeout=1.0)
    handle = await d.submit(spec)
    ex = only_exit(await collect(d, spec, handle))
    assert ex.error.startswith("timed out after") and "(limit 1" in ex.error and "started a child" in ex.error
    assert ex.exit_code == -signal.SIGKILL
    child = int((tmp_path / "child.pid").read_text())
    assert not _alive(child, None)


async def test_cancel(tmp_path: Path) -> None:
    job = script(tmp_path, WAIT_FOR_GO)
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job])
    handle = await d.submit(spec)

    async def act() -> None:
        await d.cancel(spec, handle)
        assert not _alive(handle.data["job_pid"], handle.data["job_ticks"])

    updates = await watch_until_waiting(d, spec, handle, act)
    ex = only_exit(updates)
    assert ex.exit_code == -signal.SIGTERM and ex.error.startswith("cancelled after")
    await d.cancel(spec, handle)  # safe once it has ended
    await LocalDispatcher().cancel(spec, handle)


@pytest.mark.parametrize(
    "code, expected_code, expected_error",
    [
        ("import os; os._exit(2)", 2, "exited with code 2 (it printed nothing"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -9, "killed by signal 9 (SIGKILL) (it printed"),
    ],
)
async def test_job_that_crashes_before_printing(tmp_path: Path, code, expected_code, expected_error) -> None:
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, "-c", code])
    updates = await collect(d, spec, await d.submit(spec))
    ex = only_exit(updates)
    assert lines(updates) == [] and ex.exit_code == expected_code and ex.error.startswith(expected_error)


async def test_program_that_cannot_start(tmp_path: Path) -> None:
    d = dispatcher()
    spec = spec_for(tmp_path, [str(tmp_path / "no-such-program"), "--flag"])
    updates = await collect(d, spec, await d.submit(spec))
    ex = only_exit(updates)
    assert not any(isinstance(u, Started) for u in updates)
    assert ex.exit_code == 127 and "could not start the job" in ex.error and "no-such-program" in ex.error


async def test_hostile_argv_values_arrive_inert(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    hostile = [
        "; rm -rf x",
        "$(touch pwned)",
        "`touch pwned2`",
        'it\'s "quoted"',
        "line1\nline2",
        "&& touch p3",
        "*",
        "--lr=1e-3 | tee out",
        "trainer.batch_size=$((1<<30))",
        "",
    ]
    job = script(tmp_path, "import json, sys\njson.dump(sys.argv[1:], open('argv.json', 'w'))\n")
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job, *hostile])
    ex = only_exit(await collect(d, spec, await d.submit(spec)))
    assert ex.exit_code == 0
    assert json.loads((tmp_path / "argv.json").read_text()) == hostile
    assert (tmp_path / "x").is_dir()
    assert not any((tmp_path / name).exists() for name in ("pwned", "pwned2", "p3", "out"))


def test_tail_splits_lines_across_reads(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    tail = Tail(path)
    assert tail.read() == []
    with open(path, "ab") as f:
        for chunk in (b"a\r", b"\nb", b"c\rd\n", "é".encode()[:1]):
            f.write(chunk)
            f.flush()
            tail_lines = tail.read()
            if chunk == b"\nb":
                assert tail_lines == ["a"]
        f.write("é".encode()[1:] + b"\n" + b"x" * 70_000)
    assert tail.read() == ["é", "x" * 65536]
    assert tail.flush() == ["x" * (70_000 - 65536)]


async def test_launcher_forwards_sigterm_to_the_job(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        textwrap.dedent(
            """
            import signal, sys
            def bye(signum, frame):
                print(f"got {signal.Signals(signum).name}, saving a checkpoint", flush=True)
                sys.exit(5)
            signal.signal(signal.SIGTERM, bye)
            """
        )
        + WAIT_FOR_GO,
    )
    d = dispatcher()
    spec = spec_for(tmp_path, [PY, job])
    handle = await d.submit(spec)

    async def act() -> None:
        os.kill(handle.data["launcher_pid"], signal.SIGTERM)

    updates = await watch_until_waiting(d, spec, handle, act)
    ex = only_exit(updates)
    assert "got SIGTERM, saving a checkpoint" in lines(updates)
    assert ex.exit_code == 5 and ex.error.startswith("exited with code 5")
