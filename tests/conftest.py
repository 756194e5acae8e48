from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parent.parent
LEDGER_JOB = ROOT / "tests" / "jobs" / "ledger_job.py"

SWEEP_TOML = """
max_trials = {max_trials}
max_parallel_jobs = {parallel}
monitoring_interval = 60
recipe_module = "toy"
command = ["{python}", "{job}"]
retry_backoff = 0.1
seed = 7

[protein_config]
metric = "score"
method = "{method}"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = -1.0
max = 1.0

[protein_config.parameters."toy.lr"]
distribution = "log_normal"
min = 1e-4
max = 1e-1

[protein_config.settings]
num_random_samples = 2
"""


@pytest.fixture(autouse=True)
def _logging_reset_after_each_test() -> Iterator[None]:
    """A test that runs the CLI in-process points structlog at that test's captured stdout, which pytest closes
    afterwards: later tests in the same worker would then fail on their first log line. Each test starts clean."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def sweep_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a ledger, for sweeps that run tests/jobs/ledger_job.py."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger.txt"))
    return tmp_path


def write_sweep(path: Path, max_trials: int = 4, parallel: int = 2, method: str = "random") -> Path:
    path.write_text(
        SWEEP_TOML.format(
            max_trials=max_trials, parallel=parallel, method=method, python=sys.executable, job=LEDGER_JOB
        )
    )
    return path


def ledger(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def times_opened(db: Path) -> int:
    """How often the sweep whose log is ``db`` was opened by a serve (created, then resumed)."""
    from orchestrator.core.reducer import fold
    from stores.factory import open_store

    if not db.exists():
        return 0
    store = open_store(db)
    try:
        state = fold(s.event for s in store.read(0))
    finally:
        store.close()
    return (state.sweep is not None) + state.resumes


def wait_until_opened(db: Path, times: int, timeout: float = 120) -> None:
    """Until the sweep's log says a serve opened it ``times`` times in all (a loaded machine can take seconds
    to start Python, so a kill timed from the process's start may come before it opened the log)."""
    deadline = time.time() + timeout
    while times_opened(db) < times:
        if time.time() > deadline:
            raise AssertionError(f"no serve opened {db} a {times}th time within {timeout} s")
        time.sleep(0.1)


def run_orchestrator(
    cwd: Path, *args: str, timeout: float = 300, text: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """``python -m orchestrator ARGS`` as a user runs it, in ``cwd``, with the tests' environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=serve_env(**env),
        capture_output=True,
        text=text,
        timeout=timeout,
    )


def serve_env(pythonpath: Sequence[str | Path] = (), **extra: str) -> dict[str, str]:
    """The environment of a process run as a user would, with this checkout (and ``pythonpath``) importable."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *map(str, pythonpath), env.get("PYTHONPATH", "")])
    return env


def serve(
    sweep: str,
    cwd: Path,
    *extra: str,
    pythonpath: Sequence[str | Path] = (),
    stderr: int = subprocess.STDOUT,
    **env: str,
) -> subprocess.Popen[str]:
    """A real ``serve`` of ``cwd/sweep.toml`` as sweep ``sweep``, JSON log lines on its stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--sweep", sweep, "--config", "sweep.toml"]
        + ["--log-format", "json", *extra],
        cwd=cwd,
        env=serve_env(pythonpath, **env),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def long_sweep(trials: int, sweep: str = "s") -> list:
    """The events of a finished sweep of ``trials`` trials, train then eval each; every fifth trial fails and
    trial n scores n % 97."""
    from orchestrator import events as ev

    out: list = [ev.SweepCreated(sweep=sweep, config={"max_trials": trials})]
    for n in range(1, trials + 1):
        run = f"{sweep}_trial_{n:04d}"
        out += [
            ev.TrialSuggested(trial=n, run=run, params={"x": n}),
            ev.JobRequested(key=f"{run}.train.1", trial=n, kind="train", argv=["t", str(n)]),
            ev.JobExited(key=f"{run}.train.1", exit_code=0, duration=1.0),
            ev.JobRequested(key=f"{run}.eval.1", trial=n, kind="eval", argv=["e"]),
            ev.JobExited(key=f"{run}.eval.1", exit_code=0, result={"score": n % 97}),
        ]
        out.append(ev.TrialCompleted(trial=n, score=n % 97, cost=1.0) if n % 5 else ev.TrialFailed(trial=n, reason="x"))
    return [*out, ev.SweepFinished(best_trial=None)]
