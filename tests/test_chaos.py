"""Chaos: SIGKILL the service at random moments, over and over, and check the sweep comes out whole."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio

from orchestrator.config import load_config
from orchestrator.logs import configure_logging
from orchestrator.reducer import fold
from orchestrator.runtime import build_service
from stores.sqlite import SQLiteStore
from tests.conftest import ledger, serve_env, times_opened, wait_until_opened, write_sweep


def test_twenty_sigkills_lose_nothing_and_run_nothing_twice(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=10, parallel=3)
    rng = random.Random(1234)
    argv = [
        sys.executable,
        "-m",
        "orchestrator",
        "serve",
        "--sweep",
        "chaos",
        "--config",
        "sweep.toml",
        "--log-format",
        "json",
    ]
    env = serve_env(JOB_SECONDS="6")
    db = sweep_dir / "train_dir" / "chaos" / "events.db"
    kills = 0
    while kills < 20:
        proc = subprocess.Popen(argv, cwd=sweep_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if kills % 2:  # every other kill at a random moment of start-up, the others once the log is open
            time.sleep(rng.uniform(0.6, 2.0))
        else:
            wait_until_opened(db, times_opened(db) + 1)
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:
            break  # the sweep finished before this kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    # The jobs left to run after the last kill run short: their length only mattered while kills could land.
    final_env = serve_env(JOB_SECONDS="1")
    final = subprocess.run(argv, cwd=sweep_dir, env=final_env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout[-3000:]
    assert kills == 20

    store = SQLiteStore(sweep_dir / "train_dir" / "chaos" / "events.db")
    stored = list(store.read(0))
    store.close()
    state = fold(s.event for s in stored)
    assert [s.seq for s in stored] == list(range(1, len(stored) + 1))
    assert state.finished and sorted(t.trial for t in state.shown_trials()) == list(range(1, 11))
    assert all(t.status == "completed" and t.score is not None for t in state.shown_trials())
    starts = Counter(key for kind, key, *_ in ledger(sweep_dir / "ledger.txt") if kind == "start")
    assert set(starts.values()) == {1}, [k for k, n in starts.items() if n > 1]
    assert len(starts) == 20  # one train and one eval per trial, never a second run of any key
    assert 10 <= state.resumes <= kills  # 10 kills came after the log was open; a start-up kill may come before


def test_the_live_state_equals_a_replay_of_the_log(sweep_dir: Path) -> None:
    write_sweep(sweep_dir / "sweep.toml", max_trials=3, parallel=2)
    os.environ["JOB_SECONDS"] = "0.1"
    configure_logging("json", stream=open(os.devnull, "w"))
    config = load_config(sweep_dir / "sweep.toml", {"sweep_name": "replay"})
    service = build_service(config)
    live = anyio.run(service.run)
    store = SQLiteStore(config.sweep_dir / "events.db")
    replayed = fold(s.event for s in store.read(0))
    store.close()
    assert live == replayed and live.finished


CRASH_POINTS = Path(__file__).parent / "fakes" / "crash_points.py"


def test_a_kill_while_writing_to_the_store_or_dispatching_loses_nothing(sweep_dir: Path) -> None:
    """SIGKILL at the exact moments that matter: in the middle of a store transaction (rows written, not
    committed), just after a commit (durable, not yet acted on) and just after a job was dispatched (running,
    its submission not yet logged). Each restart recovers: every job runs exactly once and the sweep completes."""
    write_sweep(sweep_dir / "sweep.toml", max_trials=12, parallel=2)
    env = serve_env(JOB_SECONDS="0.4")
    serve = ["serve", "--sweep", "points", "--config", "sweep.toml", "--log-format", "json"]
    crashes = [
        ("mid-write", 3),
        ("dispatch", 1),
        ("after-commit", 4),
        ("mid-write", 6),
        ("dispatch", 2),
        ("after-commit", 2),
        ("mid-write", 9),
        ("dispatch", 3),
        ("after-commit", 7),
    ]
    db = sweep_dir / "train_dir" / "points" / "events.db"
    for point, n in crashes:
        proc = subprocess.run(
            [sys.executable, str(CRASH_POINTS), point, str(n), *serve],
            cwd=sweep_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, (point, n, proc.stdout[-2000:])
        report = json.loads((sweep_dir / "crash.json").read_text())
        stored = list(SQLiteStore(db).read(0))
        assert [s.seq for s in stored] == list(range(1, len(stored) + 1))
        if point == "mid-write":  # the rows of the torn transaction are gone, all of them
            assert report["writing"] >= 1 and stored[-1].seq == report["last_seq"]
        elif point == "after-commit":  # what was committed stays, though nothing acted on it yet
            assert stored[-1].seq == report["last_seq"]
        else:  # the job runs, but the log does not know it was submitted
            assert not any(s.event.type == "JobSubmitted" and s.event.key == report["key"] for s in stored)
            assert any(s.event.type == "JobRequested" and s.event.key == report["key"] for s in stored)
            run, kind, attempt = report["key"].rsplit(".", 2)
            launched = json.loads((db.parent / run / f"{kind}.{attempt}" / "launcher.json").read_text())
            assert launched["job_pid"] > 0  # its launcher claimed the key and started it
    final = subprocess.run(
        [sys.executable, "-m", "orchestrator", *serve],
        cwd=sweep_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert final.returncode == 0, final.stdout[-3000:]

    store = SQLiteStore(db)
    state = fold(s.event for s in store.read(0))
    store.close()
    assert state.finished and state.completed == 12 and state.failed == 0
    starts = Counter(key for kind, key, *_ in ledger(sweep_dir / "ledger.txt") if kind == "start")
    assert len(starts) == 24 and set(starts.values()) == {1}, starts  # a train and an eval per trial, once each
    assert state.resumes == len(crashes)
