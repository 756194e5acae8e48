"""Shared pieces of the W&B tests: a client that can be taken down (an outage), and a driver that feeds a mirror
the way the service does."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio

from orchestrator.config import WandbSettings
from stores.wandb import WandbMirror
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
