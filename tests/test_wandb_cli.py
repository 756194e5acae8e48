"""`serve --sweep X` on a machine with no local log rebuilds the sweep from W&B, then carries on."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from fakes.wandb_server import FakeWandbServer

from orchestrator.reducer import fold
from stores.sqlite import SQLiteStore
from tests.conftest import ledger, serve_env, write_sweep

KEY = "0123456789abcdef0123456789abcdef01234567"  # shaped like a W&B key; fake


def wandb_env(home: Path, **extra: str) -> dict[str, str]:
    env = serve_env(
        JOB_SECONDS="0.2",
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
        WANDB_CONFIG_DIR=str(home / ".wandb-config"),
        WANDB_CACHE_DIR=str(home / ".wandb-cache"),
        WANDB_DATA_DIR=str(home / ".wandb-data"),
        **extra,
    )
    for name in ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_API_KEY", "WANDB_DIR", "WANDB_ENTITY"):
        env.pop(name, None) if name not in extra else None
    return env


def serve(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "orchestrator", "serve", "--sweep", "wbcli", "--log-format", "json", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_serve_resumes_on_an_empty_machine_from_wandb(tmp_path: Path) -> None:
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    machine_a.mkdir()
    machine_b.mkdir()
    write_sweep(machine_a / "sweep.toml", max_trials=2, parallel=1)
    done_a = serve(machine_a, wandb_env(machine_a, LEDGER=str(machine_a / "ledger.txt")), "--config", "sweep.toml")
    assert done_a.returncode == 0, done_a.stdout[-2000:]
    store = SQLiteStore(machine_a / "train_dir" / "wbcli" / "events.db")
    state_a = fold(s.event for s in store.read(0))
    store.close()

    with FakeWandbServer(KEY, entity="test-entity") as server:
        server.load_offline(machine_a / "train_dir" / "wbcli", project="sweeps")
        env_b = wandb_env(machine_b, LEDGER=str(machine_b / "ledger.txt"), WANDB_API_KEY=KEY, WANDB_BASE_URL=server.url)
        done_b = serve(
            machine_b, env_b, "--args", "store=wandb", "max_trials=4", "wandb.mode=offline", "wandb.entity=test-entity"
        )
    assert done_b.returncode == 0, done_b.stdout[-3000:]
    assert "Rebuilt" in done_b.stdout and KEY not in done_b.stdout + done_b.stderr

    store = SQLiteStore(machine_b / "train_dir" / "wbcli" / "events.db")
    state_b = fold(s.event for s in store.read(0))
    store.close()
    assert state_b.finished and [t.trial for t in state_b.shown_trials()] == [1, 2, 3, 4]
    for n in (1, 2):  # what machine A did comes back as it was, and is not run again
        assert dict(state_b.trial(n).params) == dict(state_a.trial(n).params)
        assert state_b.trial(n).score == state_a.trial(n).score
    assert all(t.status == "completed" for t in state_b.shown_trials())
    started_on_b = Counter(key for kind, key, *_ in ledger(machine_b / "ledger.txt") if kind == "start")
    assert sorted(started_on_b) == [f"wbcli_trial_000{n}.{k}.1" for n in (3, 4) for k in ("eval", "train")]
