"""The W&B mirror, checked against what wandb really wrote: offline ``.wandb`` files read back record by record.

Events come from a real SQLite log folded by the real reducer (tests/fakes/wandb_script.py) and reach the mirror
through ``publish(stored, state)``, as the service delivers them.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest
from fakes.wandb_files import read_offline_runs, segment_files
from fakes.wandb_helpers import LoopLag, check_mirrors, hermetic_wandb, make_mirror, mirror_config
from fakes.wandb_script import METRIC, Log, definition, params, run_name, script

from orchestrator import reducer
from orchestrator.config import WandbSettings
from stores.wandb import CURSOR_FILE, WandbMirror, flatten, resolve_mode, unflatten

SWEEP = "wbtest.sweep.01"


@pytest.fixture(autouse=True)
def _hermetic_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_wandb(tmp_path, monkeypatch)


async def drive(
    mirror: WandbMirror, log: Log, phases, between=None, flush: float = 30.0, restart: bool = False
) -> list[float]:
    """Run the mirror in a task group and commit the phases; returns how long each publish() took. ``restart``:
    first hand the mirror the logged events after its cursor, as a service starting up does."""
    took: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(mirror.run)
        if restart:
            log.replay_to(mirror)
        for i, phase in enumerate(phases):
            for stored, state in log.append(phase):
                t = time.perf_counter()
                mirror.publish(stored, state)
                took.append(time.perf_counter() - t)
            await anyio.sleep(0)
            if between is not None:
                await between(i)
        assert await mirror.flush(flush), "the mirror did not catch up"
        tg.cancel_scope.cancel()
    return took


def test_flatten_and_unflatten_round_trip() -> None:
    p = params(3) | {"model.hidden": 64, "model.hidden.extra": 1}
    assert flatten(unflatten(p)) == p
    assert unflatten(params(1))["trainer"]["optimizer"]["learning_rate"] == params(1)["trainer.optimizer.learning_rate"]


def test_mirror_writes_one_run_per_trial_and_the_sweep_definition(tmp_path: Path) -> None:
    log = Log(tmp_path / "events.db")
    mirror = make_mirror(SWEEP, tmp_path)
    anyio.run(drive, mirror, log, script(SWEEP))
    state = log.state
    assert state.finished and state.numbered == 6
    runs = check_mirrors(tmp_path, log.store.path)

    # The seed's keys, the status and progress, the eval job's metrics, in the trial's own run.
    best = runs[run_name(SWEEP, 3)].summary
    assert best["sweep/suggestion"] == params(3)
    assert best["sweep/score"] == 0.93 and best["sweep/cost"] == 15.5
    assert best["sweep/status"] == "completed" and best["sweep/progress"] == 1.0
    assert best[METRIC] == 0.93 and best["evaluator/eval_arena/survival_rate"] == pytest.approx(0.593)
    assert runs[run_name(SWEEP, 3)].config["trainer"]["losses"]["loss_configs"]["ppo"]["clip_coef"] == 0.16
    failed = runs[run_name(SWEEP, 2)].summary
    assert failed["sweep/status"] == "failed" and failed["sweep/reason"] == "train exited with 1"
    # The completion row sits at the step of its TrialCompleted event, so a replay cannot add a second one.
    seqs = {s.event.trial: s.seq for s in log.store.read() if s.event.type == "TrialCompleted"}
    assert [r["_step"] for r in runs[run_name(SWEEP, 1)].history] == [seqs[1]]

    # The sweep-level run holds the definition, exactly, and the totals.
    sweep_run = runs[SWEEP]
    assert {k: v for k, v in sweep_run.config.items() if k != "_wandb"} == json.loads(json.dumps(definition(SWEEP)))
    assert sweep_run.summary["sweep/best_run"] == run_name(SWEEP, 3)
    assert sweep_run.summary["sweep/finished"] is True and sweep_run.state == "finished"

    # Everything lives under the sweep dir, and the cursor says the whole log is mirrored.
    assert all(tmp_path in p.parents for p in segment_files(tmp_path))
    cursor = json.loads((tmp_path / CURSOR_FILE).read_text())
    assert cursor["seq"] == log.store.last_seq() == mirror.mirrored_seq
    log.close()


def test_progress_of_a_running_trial_reaches_the_summary(tmp_path: Path) -> None:
    log = Log(tmp_path / "events.db")
    mirror = make_mirror(SWEEP, tmp_path)
    anyio.run(drive, mirror, log, script(SWEEP)[:1])
    runs = read_offline_runs(tmp_path)
    training = runs[run_name(SWEEP, 3)].summary
    assert training["sweep/status"] == "training"
    assert training["sweep/progress"] == pytest.approx(1 / 3) and training["sweep/sps"] == 700.0
    assert runs[run_name(SWEEP, 4)].summary["sweep/status"] == "pending"
    assert runs[SWEEP].summary["sweep/finished"] is False
    log.close()


def test_outage_in_the_middle_of_a_sweep(tmp_path: Path) -> None:
    """W&B goes down after the first phase and stays down (and slow) until the sweep has finished: publishing
    stays instant, the event loop never stalls, memory stays bounded, and afterwards the mirror catches up with
    nothing missing and nothing written twice."""
    log = Log(tmp_path / "events.db")
    mirror = make_mirror(SWEEP, tmp_path, flaky=True)
    client = mirror.client
    lag = LoopLag()
    seen = {}

    async def between(i: int) -> None:
        if i == 0:
            assert await mirror.flush(30)
            client.down.set()  # W&B goes away ...
            client.delay = 0.5  # ... and what still answers is slow
        if i == 1:
            await anyio.sleep(0.5)  # the sweep runs on while W&B is away
        if i == 2:
            # The sweep has finished while W&B was down; the mirror holds markers, not events.
            await anyio.sleep(0.5)
            seen["failed_calls"] = client.failed_calls
            seen["dirty"] = len(mirror._dirty) + len(mirror._completed_at)
            seen["cursor_seq"] = mirror.mirrored_seq
            client.down.clear()  # ... and comes back

    async def main() -> list[float]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.run)
            took = await drive(mirror, log, script(SWEEP), between=between)
            tg.cancel_scope.cancel()
        return took

    took = anyio.run(main)
    assert max(took) < 0.02, f"publish took {max(took):.4f} s"
    assert lag.worst < 0.3, f"the event loop stalled for {lag.worst:.3f} s"  # a W&B call takes 0.5 s
    print("outage:", seen, "errors", mirror.errors, "worst lag", lag.worst, "max publish", max(took))
    assert seen["failed_calls"] >= 1 and mirror.errors >= 1
    assert mirror.errors < 40, "retries must back off, not spin"
    assert seen["dirty"] <= 2 * log.state.numbered
    assert seen["cursor_seq"] < log.store.last_seq()
    check_mirrors(tmp_path, log.store.path)
    assert mirror.mirrored_seq == log.store.last_seq()
    log.close()


def test_restart_continues_from_the_cursor_without_writing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first mirror writes phase 1, then is down for phase 2 when the service stops. A second mirror (a new
    process: the log replayed, the cursor read back) writes what was missed and phase 3, and leaves alone the runs
    that were already complete. The state remembers only the last ended trial: what was missed comes from the log."""
    monkeypatch.setattr(reducer, "RECENT_TRIALS", 1)
    log = Log(tmp_path / "events.db")
    phases = script(SWEEP)
    first = make_mirror(SWEEP, tmp_path, flaky=True)

    async def session_one() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            for stored, state in log.append(phases[0]):
                first.publish(stored, state)
            assert await first.flush(30)
            first.client.down.set()
            for stored, state in log.append(phases[1]):
                first.publish(stored, state)
            await anyio.sleep(0.3)
            assert first.pending  # W&B is down: phase 2 is not written yet
            tg.cancel_scope.cancel()  # the service stops

    anyio.run(session_one)
    log.close()
    before = {rid: len(r.segments) for rid, r in read_offline_runs(tmp_path).items()}
    cursor_before = json.loads((tmp_path / CURSOR_FILE).read_text())
    # Trial 1 finished in phase 1, which is all written: the cursor's seq covers it, and it has no entry left.
    assert run_name(SWEEP, 1) not in cursor_before["runs"] and run_name(SWEEP, 3) in cursor_before["runs"]

    # A new process: replay the log, start a new mirror (handed the events after its cursor), carry on with phase 3.
    log = Log(tmp_path / "events.db")
    second = make_mirror(SWEEP, tmp_path)

    anyio.run(partial(drive, second, log, [phases[2]], restart=True))
    runs = check_mirrors(tmp_path, log.store.path)
    after = {rid: len(r.segments) for rid, r in runs.items()}
    # Trials 1 and 2 were complete in W&B before the restart: not touched again.
    assert after[run_name(SWEEP, 1)] == before[run_name(SWEEP, 1)] == 1
    assert after[run_name(SWEEP, 2)] == before[run_name(SWEEP, 2)] == 1
    # Trials 3 and 4 were open at the stop; each is resumed once (same run id) and completed.
    assert after[run_name(SWEEP, 3)] == before[run_name(SWEEP, 3)] + 1
    assert after[run_name(SWEEP, 4)] == before[run_name(SWEEP, 4)] + 1
    assert second.mirrored_seq == log.store.last_seq()

    # A third start with nothing new writes nothing at all.
    files = len(segment_files(tmp_path))
    third = make_mirror(SWEEP, tmp_path)

    anyio.run(partial(drive, third, log, [], restart=True))
    assert third.writes == 0 and len(segment_files(tmp_path)) == files
    log.close()


def test_open_runs_are_bounded(tmp_path: Path) -> None:
    log = Log(tmp_path / "events.db")
    mirror = make_mirror(SWEEP, tmp_path, max_open_runs=2)
    anyio.run(drive, mirror, log, script(SWEEP)[:1])
    assert len(mirror._open) == 0  # closed at shutdown
    check_mirrors(tmp_path, log.store.path)
    log.close()


def test_disabled_mode_writes_nothing(tmp_path: Path) -> None:
    log = Log(tmp_path / "events.db")
    mirror = WandbMirror(mirror_config(SWEEP, mode="disabled"), tmp_path)
    anyio.run(drive, mirror, log, script(SWEEP)[:1])
    assert segment_files(tmp_path) == [] and not (tmp_path / CURSOR_FILE).exists()
    log.close()


def test_mode_goes_online_with_a_key_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_mode(WandbSettings(), {}) == "offline"
    assert resolve_mode(WandbSettings(), {"WANDB_API_KEY": "k" * 40}) == "online"
    assert resolve_mode(WandbSettings(mode="offline"), {"WANDB_API_KEY": "k" * 40}) == "offline"
    assert resolve_mode(WandbSettings(mode="disabled"), {"WANDB_API_KEY": "k" * 40}) == "disabled"
    assert resolve_mode(SimpleNamespace(mode="online"), {}) == "online"


def test_a_new_destination_starts_a_fresh_cursor(tmp_path: Path) -> None:
    log = Log(tmp_path / "events.db")
    anyio.run(drive, make_mirror(SWEEP, tmp_path), log, script(SWEEP)[:1])
    other = WandbMirror(mirror_config(SWEEP, project="another"), tmp_path)
    assert other._cursor["runs"] == {}
    log.close()


def test_a_hung_wandb_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    """W&B stops answering at all: the mirror gives up waiting after close_timeout, and the next start (with W&B
    back) writes everything."""
    log = Log(tmp_path / "events.db")
    mirror = make_mirror(SWEEP, tmp_path, flaky=True, close_timeout=0.5)
    mirror.client.delay = 2.0  # every call hangs for 2 s

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mirror.run)
            for stored, state in log.append(script(SWEEP)[0]):
                mirror.publish(stored, state)
            await anyio.sleep(0.2)  # a write is now stuck in W&B
            t = time.perf_counter()
            tg.cancel_scope.cancel()
        return time.perf_counter() - t

    assert anyio.run(main) < 2.0  # a W&B call hangs for 2 s; the close gives up after 0.5 s
    # The next start is a new process in real life; here, wait for the abandoned call to come back and close its
    # runs (a run id can be open only once per process).
    mirror.client.delay = 0.0
    deadline = time.monotonic() + 15
    while mirror._open or mirror._io_lock.locked():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    log.close()
    log = Log(tmp_path / "events.db")
    second = make_mirror(SWEEP, tmp_path)

    anyio.run(partial(drive, second, log, [], restart=True))
    check_mirrors(tmp_path, log.store.path)
    log.close()
