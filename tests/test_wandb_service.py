"""The mirror inside the real service: real subprocess jobs, a real SQLite log, W&B going down mid-sweep.

The service is built as ``orchestrator.runtime.build_service`` builds it, with the mirror added as a subscriber
(the way the runtime wires it when ``wandb.mode`` is not ``disabled``).
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from fakes.wandb_helpers import LoopLag, check_mirrors, hermetic_wandb, make_mirror

from orchestrator import reducer
from orchestrator.config import load_config
from orchestrator.runtime import build_service
from stores.sqlite import SQLiteStore
from stores.wandb import CURSOR_FILE, WandbMirror
from tests.conftest import write_sweep


@pytest.fixture(autouse=True)
def _hermetic_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_wandb(tmp_path, monkeypatch)


def test_wandb_outage_in_the_middle_of_a_real_sweep(sweep_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_SECONDS", "0.3")
    write_sweep(sweep_dir / "sweep.toml", max_trials=4, parallel=2)
    config = load_config(sweep_dir / "sweep.toml", {"sweep_name": "wbe2e", "monitoring_interval": 60})
    service = build_service(config, log_format="json")
    mirror = make_mirror("wbe2e", config.sweep_dir, flaky=True)
    # serve's own mirror, swapped for the same mirror over a client with an outage switch.
    service.subscribers = [s for s in service.subscribers if not isinstance(s, WandbMirror)] + [mirror]
    client = mirror.client
    lag = LoopLag()
    seen: dict[str, object] = {}

    async def weather() -> None:
        """W&B goes down (and slow) once the first trial completes, and comes back when the sweep has finished."""
        while not any(t.status == "completed" for t in service.state.shown_trials()):
            await anyio.sleep(0.02)
        client.down.set()
        client.delay = 0.5
        seen["down_at"] = service.last_seq
        while not service.state.finished:
            await anyio.sleep(0.02)
        seen["pending_at_finish"] = mirror.pending
        seen["mirrored_at_finish"] = mirror.mirrored_seq
        client.down.clear()
        client.delay = 0.0

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.run)
            tg.start_soon(weather)
            with anyio.fail_after(120):
                state = await service.run()
            tg.cancel_scope.cancel()
        return state

    state = anyio.run(main)
    assert state.finished and [t.status for t in state.shown_trials()] == ["completed"] * 4
    # The sweep did not wait for W&B: it finished with writes still pending, and the loop never stalled.
    assert seen["pending_at_finish"], "the sweep should have finished while W&B was still behind"
    assert client.failed_calls >= 1, (client.calls, client.failed_calls, mirror.errors, seen)
    assert lag.worst < 0.3, f"the event loop stalled {lag.worst:.3f} s"
    # Afterwards (the service's drain at the end), W&B holds everything, once.
    check_mirrors(config.sweep_dir, config.sweep_dir / "events.db")
    assert mirror.mirrored_seq == service.last_seq


def test_a_sweep_run_without_wandb_is_mirrored_in_full_once_resumed_with_it(
    sweep_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state keeps only the most recent ended trials (here one), so what W&B missed must come from the log: at
    start-up the service replays to the mirror every event after its cursor. A later start writes no trial again."""
    monkeypatch.setattr(reducer, "RECENT_TRIALS", 1)
    monkeypatch.setenv("JOB_SECONDS", "0.05")
    write_sweep(sweep_dir / "sweep.toml", max_trials=4, parallel=2)

    def serve(mode: str) -> tuple[object, WandbMirror | None]:
        config = load_config(
            sweep_dir / "sweep.toml", {"sweep_name": "wbcatch", "monitoring_interval": 60, "wandb": {"mode": mode}}
        )
        service = build_service(config, log_format="json")
        mirror = next((s for s in service.subscribers if isinstance(s, WandbMirror)), None)

        async def bounded():
            with anyio.fail_after(120):
                return await service.run()

        return anyio.run(bounded), mirror

    state, mirror = serve("disabled")
    assert state.finished and state.completed == 4 and len(state.recent) == 1 and mirror is None
    db = sweep_dir / "train_dir" / "wbcatch" / "events.db"

    state, mirror = serve("offline")
    assert mirror is not None and mirror.mirrored_seq == SQLiteStore(db).last_seq()
    runs = check_mirrors(db.parent, db)  # every trial, not only the one the state remembers
    assert len(runs) == 5 and runs["wbcatch"].summary["sweep/completed"] == 4

    state, mirror = serve("offline")
    assert mirror is not None and mirror.writes == 1  # the sweep's own run (one more resume); no trial again
    cursor = json.loads((db.parent / CURSOR_FILE).read_text())
    assert cursor["runs"] == {} and cursor["seq"] == SQLiteStore(db).last_seq()  # all written, all finished
