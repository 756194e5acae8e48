"""Whole sweeps through the real service, real subprocess jobs and a real SQLite log."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.reducer import fold
from stores.sqlite import SQLiteStore
from tests.conftest import ledger, serve, wait_until_opened, write_sweep


def stored_state(cwd: Path, sweep: str):
    store = SQLiteStore(cwd / "train_dir" / sweep / "events.db")
    try:
        return fold(s.event for s in store.read(0)), [s.seq for s in store.read(0)]
    finally:
        store.close()


def test_a_sweep_runs_train_then_eval_for_every_trial(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=4, parallel=2)
    proc = serve("s1", sweep_dir, JOB_SECONDS="0.3")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    state, seqs = stored_state(sweep_dir, "s1")
    assert state.finished and seqs == list(range(1, len(seqs) + 1))
    assert [t.status for t in state.shown_trials()] == ["completed"] * 4
    assert [t.run for t in state.shown_trials()] == [f"s1_trial_{i:04d}" for i in range(1, 5)]
    for t in state.shown_trials():
        x = t.params["toy.x"]
        assert t.score == pytest.approx(-((x - 0.3) ** 2))
        assert [j.kind for j in t.jobs] == ["train", "eval"]
        train, evaluation = t.jobs
        assert train.ended_at <= evaluation.requested_at  # eval only after its train
        assert t.cost == pytest.approx(train.duration)
    starts = Counter(key for kind, key, *_ in ledger(sweep_dir / "ledger.txt") if kind == "start")
    assert set(starts.values()) == {1} and len(starts) == 8
    assert "SWEEP SUMMARY" in out and "Best config:" in out
    assert (sweep_dir / "train_dir" / "s1" / "s1_trial_0001" / "train.1" / "output.log").exists()


def test_max_parallel_jobs_holds(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=5, parallel=2)
    proc = serve("par", sweep_dir, JOB_SECONDS="0.4")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    running, peak = 0, 0
    for kind, *_ in ledger(sweep_dir / "ledger.txt"):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    state, _ = stored_state(sweep_dir, "par")
    assert state.numbered == 5 and sum(len(t.jobs) for t in state.shown_trials()) == 10


def test_a_failing_job_is_retried_with_its_reason_recorded(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=2, parallel=1)
    proc = serve("f", sweep_dir, "--args", "max_retries=1", JOB_SECONDS="0.1", FAIL_KEY="f_trial_0001.train.1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    state, _ = stored_state(sweep_dir, "f")
    first = state.trial(1)
    assert first.status == "completed"  # the retry (attempt 2) succeeded
    assert [j.attempt for j in first.jobs_of("train")] == [1, 2]
    assert "code 3" in first.job("f_trial_0001.train.1").error
    assert "simulated failure" in first.job("f_trial_0001.train.1").error


def test_a_second_serve_is_refused_while_the_first_runs(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=3, parallel=1)
    first = serve("lease", sweep_dir, JOB_SECONDS="1.0")
    try:
        db = sweep_dir / "train_dir" / "lease" / "events.db"
        deadline = time.time() + 60
        while not db.exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        second = serve("lease", sweep_dir)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 3
        assert "already being served by pid" in out and "Traceback" not in out
    finally:
        first.kill()
        first.wait()
    # Once the first is gone, the next serve takes over and finishes.
    third = serve("lease", sweep_dir, JOB_SECONDS="0.1")
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0, out


def test_sigkill_in_the_middle_then_restart_runs_every_job_exactly_once(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=6, parallel=2)
    kills = 0
    for opened, delay in enumerate((1.5, 2.5, 1.0)):
        proc = serve("crash", sweep_dir, JOB_SECONDS="1.2")
        wait_until_opened(sweep_dir / "train_dir" / "crash" / "events.db", opened + 1)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    assert kills == 3
    proc = serve("crash", sweep_dir, JOB_SECONDS="1.2")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    state, seqs = stored_state(sweep_dir, "crash")
    assert state.finished and seqs == list(range(1, len(seqs) + 1))
    assert [t.trial for t in state.shown_trials()] == list(range(1, 7))
    assert all(t.status == "completed" for t in state.shown_trials())
    entries = ledger(sweep_dir / "ledger.txt")
    starts = Counter(key for kind, key, *_ in entries if kind == "start")
    assert len(starts) == 12 and set(starts.values()) == {1}, starts
    ends = Counter(key for kind, key, *_ in entries if kind == "end")
    assert ends == starts
    assert state.resumes == 3  # each kill came after its service had opened the log
