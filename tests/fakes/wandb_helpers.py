"""Shared pieces of the W&B tests: a client that can be taken down (an outage), and a driver that feeds a mirror
the way the service does."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio

from fakes.wandb_files import read_offline_runs
from orchestrator.core.config import WandbSettings
from orchestrator.core.history import all_trials
from stores.sqlite import SQLiteStore
from stores.wandb import WandbMirror, sweep_record, trial_record, unflatten
from stores.wandb_client import WandbClient, WandbError


def mirror_config(sweep: str, mode: str = "offline", project: str = "sweeps") -> Any:
    return SimpleNamespace(sweep_name=sweep, wandb=WandbSettings(mode=mode, project=project))


class FlakyClient(WandbClient):
    """The real client (real offline files), plus a switch that makes every call fail or stall like W&B being
    down or slow. ``error`` is what a failing call raises."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.down = threading.Event()
        self.delay = 0.0
        self.error: Exception = WandbError("wandb.init: CommError: Connection refused (api.wandb.ai:443)")
        self.calls = 0
        self.failed_calls = 0

    def _gate(self) -> None:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.down.is_set():
            self.failed_calls += 1
            raise self.error

    def open(self, run_id: str, **kwargs: Any):  # type: ignore[override]
        self._gate()
        return super().open(run_id, **kwargs)

    def update_config(self, handle, config):  # type: ignore[override]
        self._gate()
        return super().update_config(handle, config)

    def update_summary(self, handle, summary):  # type: ignore[override]
        self._gate()
        return super().update_summary(handle, summary)

    def log(self, handle, metrics, step):  # type: ignore[override]
        self._gate()
        return super().log(handle, metrics, step)

    def finish(self, handle, exit_code=0):  # type: ignore[override]
        # Finishing flushes what is already buffered locally; it does not fail in an outage.
        return super().finish(handle, exit_code)


def make_mirror(sweep: str, sweep_dir: Path, flaky: bool = False, **kwargs: Any) -> WandbMirror:
    config = mirror_config(sweep)
    client = FlakyClient("offline", "sweeps", None, root=sweep_dir) if flaky else None
    kwargs.setdefault("backoff", (0.05, 0.4))
    kwargs.setdefault("poll_interval", 0.05)
    return WandbMirror(config, sweep_dir, client=client, **kwargs)


class LoopLag:
    """Measures how late the event loop wakes a 10 ms ticker: the proof that nothing blocks it."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await anyio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - t - 0.01)


def _json(value):
    return json.loads(json.dumps(value))


def check_mirrors(sweep_dir: Path, db: Path) -> dict:
    """Every trial run and the sweep run hold exactly what the event log ``db`` says; no history row twice."""
    store = SQLiteStore(db)
    try:
        state, trials = all_trials(s.event for s in store.read())
    finally:
        store.close()
    runs = read_offline_runs(sweep_dir)
    assert set(runs) == {t.run for t in trials} | {state.sweep}
    for trial in trials:
        run = runs[trial.run]
        expected = trial_record(state, trial)
        assert run.display_name == trial.run and run.group == state.sweep and state.sweep in run.tags
        assert run.job_type == "trial"
        assert {k: v for k, v in run.config.items() if k != "_wandb"} == _json(unflatten(dict(trial.params)))
        summary = {k: v for k, v in run.summary.items() if not k.startswith("_")}
        assert summary == _json(expected.summary), trial.run
        rows = [r for r in run.history if "sweep/score" in r]
        if trial.status == "completed":
            assert len(rows) == 1, f"{trial.run}: {len(rows)} completion rows"
            assert rows[0]["sweep/score"] == trial.score and rows[0]["sweep/cost"] == trial.cost
            assert run.state == "finished"
        else:
            assert rows == []
        if trial.status == "failed":
            assert run.state == "failed"
        steps = [r["_step"] for r in run.history]
        assert len(steps) == len(set(steps)), f"{trial.run}: a history step written twice"
    sweep_run = runs[state.sweep]
    assert sweep_run.job_type == "sweep" and sweep_run.group == state.sweep
    assert {k: v for k, v in sweep_run.config.items() if k != "_wandb"} == _json(dict(sweep_record(state).config))
    assert {k: v for k, v in sweep_run.summary.items() if not k.startswith("_")} == _json(sweep_record(state).summary)
    return runs


_WANDB_VARS = (
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_BASE_URL",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
    "WANDB_DIR",
    "WANDB_ENTITY",
)


def hermetic_wandb(home: Path, monkeypatch: Any, api_key: str | None = None) -> None:
    """wandb with no settings from the machine: its config, cache and data under ``home``, quiet, no reporting."""
    for name in _WANDB_VARS:
        monkeypatch.delenv(name, raising=False)
    if api_key is not None:
        monkeypatch.setenv("WANDB_API_KEY", api_key)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / ".wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / ".wandb-data"))
