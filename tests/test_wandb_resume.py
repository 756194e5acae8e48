"""Resume from W&B alone: a machine with no local event log rebuilds the sweep from the group's runs.

Machine A runs part of a sweep with the mirror on (offline files, the real wandb writer). A local server on
127.0.0.1 then serves those runs through the GraphQL API the way W&B does once they are synced, and machine B,
with an empty sweep dir, reads them back through the real ``wandb.Api`` (``WANDB_BASE_URL``) and continues.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from fakes.wandb_files import read_offline_runs
from fakes.wandb_helpers import hermetic_wandb, make_mirror
from fakes.wandb_script import METRIC, Log, definition, evaluate, params, run_name, script, suggest, train
from fakes.wandb_server import FakeWandbServer, ServedRun

from orchestrator import events as ev
from orchestrator.config import WandbSettings, load_config
from orchestrator.reducer import fold
from stores.sqlite import SQLiteStore
from stores.wandb import events_from_wandb, restore_log_from_wandb
from stores.wandb_client import WandbClient, WandbError

SWEEP = "wbtest.resume"
KEY = "5f0c1d2e3b4a59687766554433221100ffeeddcc"  # shaped like a W&B key; fake
SETTINGS = WandbSettings(mode="online", project="sweeps", entity="test-entity")


@pytest.fixture(autouse=True)
def _hermetic_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_wandb(tmp_path, monkeypatch, api_key=KEY)


def machine_a(sweep_dir: Path, phases: list[list[ev.Event]]) -> Log:
    """Run phases with the mirror on (offline), then lose the machine's disk except the W&B files."""
    log = Log(sweep_dir / "events.db")
    mirror = make_mirror(SWEEP, sweep_dir)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mirror.run)
            for phase in phases:
                for stored, state in log.append(phase):
                    mirror.publish(stored, state)
            assert await mirror.flush(30)
            tg.cancel_scope.cancel()

    anyio.run(main)
    return log


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Machine A's first phase, served by the local W&B stand-in; the log of A for comparison."""
    log = machine_a(tmp_path / "machine_a", script(SWEEP)[:1])
    server = FakeWandbServer(KEY, entity="test-entity").start()
    server.load_offline(tmp_path / "machine_a", project="sweeps")
    # Another sweep in the same project must stay out of the rebuild.
    server.runs.append(
        ServedRun(
            id="other_trial_0001",
            project="sweeps",
            entity="test-entity",
            display_name="other_trial_0001",
            group="other",
            job_type="trial",
            state="finished",
            summary={"sweep/trial": 1, "sweep/score": 9.0, "sweep/status": "completed"},
        )
    )
    monkeypatch.setenv("WANDB_BASE_URL", server.url)
    yield server, log
    log.close()
    server.stop()


def test_resume_on_an_empty_machine_from_wandb_alone(tmp_path: Path, served) -> None:
    server, log_a = served
    # As the machine died: trial 3 was training (W&B marks it crashed), trial 4 was pending (still "running").
    server.run(run_name(SWEEP, 3)).state = "crashed"
    server.run(run_name(SWEEP, 4)).state = "running"
    machine_b = tmp_path / "machine_b"
    train_dir = machine_b / "train_dir"
    # Trial 3's checkpoint made it to this machine (synced, or trained remotely): it is evaluated again.
    (train_dir / run_name(SWEEP, 3) / "checkpoints").mkdir(parents=True)
    (train_dir / run_name(SWEEP, 3) / "checkpoints" / "model_000003.pt").write_bytes(b"weights")

    # What the service does when the local log is empty and the store is W&B: rebuild it, then serve it.
    store = SQLiteStore(machine_b / SWEEP / "events.db")
    restored = restore_log_from_wandb(SETTINGS, SWEEP, store, train_dir)
    assert restored and [s.seq for s in restored] == list(range(1, len(restored) + 1))
    assert server.unhandled == [] and "Runs" in server.queries
    assert restore_log_from_wandb(SETTINGS, SWEEP, store, train_dir) == []  # a log with events is the truth
    state = fold(s.event for s in store.read())
    old = log_a.state

    assert state.sweep == SWEEP
    assert _plain(state.config) == definition(SWEEP)
    assert load_config(base=_plain(state.config)).sweep_name == SWEEP  # the definition still loads
    assert [t.trial for t in state.shown_trials()] == [1, 2, 3, 4]
    for n in (1, 2, 3, 4):
        assert dict(state.trial(n).params) == params(n) == dict(old.trial(n).params)
        assert state.trial(n).run == run_name(SWEEP, n)
    one = state.trial(1)
    assert one.status == "completed" and one.score == 0.61 and one.cost == old.trial(1).cost
    assert one.metrics[METRIC] == 0.61 and one.metrics["evaluator/eval_arena/survival_rate"] == pytest.approx(0.561)
    assert state.trial(2).status == "failed" and state.trial(2).reason == "train exited with 1"
    # Crashed in training, checkpoint here: training counts as done, the scheduler will request the eval.
    three = state.trial(3)
    assert three.status == "training_done"
    (train_job,) = state.trial(3).jobs_of("train")
    assert train_job.succeeded and train_job.key == f"{run_name(SWEEP, 3)}.train.1"
    assert not state.active_jobs()
    # Pending with W&B still saying running, nothing to evaluate: failed, with a reason a person can act on.
    four = state.trial(4)
    assert four.status == "failed" and "running" in four.reason and "checkpoint" in four.reason
    assert state.next_trial == 5 and not state.finished

    # And the sweep continues on machine B: trial 3 is evaluated, trial 5 runs; the mirror writes to the same
    # run ids and group.
    log_b = Log(machine_b / SWEEP / "events.db")
    mirror = make_mirror(SWEEP, machine_b / SWEEP)
    more = evaluate(SWEEP, 3, 0.93) + suggest(SWEEP, 5) + train(SWEEP, 5) + evaluate(SWEEP, 5, 0.7)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mirror.run)
            log_b.replay_to(mirror)
            for stored, st in log_b.append(more):
                mirror.publish(stored, st)
            assert await mirror.flush(30)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert log_b.state.trial(3).status == "completed" and log_b.state.trial(5).status == "completed"
    runs_b = read_offline_runs(machine_b / SWEEP)
    assert runs_b[run_name(SWEEP, 3)].summary["sweep/score"] == 0.93
    assert runs_b[run_name(SWEEP, 5)].group == SWEEP
    log_b.close()
    store.close()


def test_a_finished_sweep_comes_back_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = machine_a(tmp_path / "a", script(SWEEP))
    with FakeWandbServer(KEY, entity="test-entity") as server:
        server.load_offline(tmp_path / "a", project="sweeps")
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        state = fold(events_from_wandb(SETTINGS, SWEEP, tmp_path / "b" / "train_dir"))
    old = log.state
    assert state.finished and state.best_trial == 3
    for trial in old.shown_trials():
        got = state.trial(trial.trial)
        assert (got.status, got.score, got.cost, dict(got.params)) == (
            trial.status,
            trial.score,
            trial.cost,
            dict(trial.params),
        )
    log.close()


def test_missing_trials_keep_numbering_gap_free(tmp_path: Path, served) -> None:
    server, _ = served
    server.runs = [r for r in server.runs if r.id != run_name(SWEEP, 2)]
    state = fold(events_from_wandb(SETTINGS, SWEEP, tmp_path / "train_dir"))
    assert [t.trial for t in state.shown_trials()] == [1, 2, 3, 4]
    assert state.trial(2).status == "failed" and "never mirrored" in state.trial(2).reason


def test_an_unknown_sweep_gives_nothing(served) -> None:
    assert events_from_wandb(SETTINGS, "no-such-sweep", "train_dir") == []


def test_pages_are_followed(served) -> None:
    runs = WandbClient("online", "sweeps", "test-entity").group_runs(SWEEP, per_page=2)
    ids = [r.id for r in runs]
    assert len(ids) == len(set(ids)) and sorted(ids) == [SWEEP] + [run_name(SWEEP, n) for n in (1, 2, 3, 4)]
    assert len(server_queries(served)) >= 3  # five runs, two per page: three pages
    assert all(r.group == SWEEP for r in runs)


def test_wandb_unreachable_or_refusing_is_a_clear_error(tmp_path: Path, served, monkeypatch) -> None:
    server, _ = served
    server.api_key = "a-different-key-than-the-one-we-send-000000"
    with pytest.raises(WandbError) as err:
        events_from_wandb(SETTINGS, SWEEP, "train_dir")
    assert KEY not in str(err.value) and err.value.__cause__ is None and err.value.__suppress_context__
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(WandbError, match="WANDB_API_KEY"):
        events_from_wandb(SETTINGS, SWEEP, "train_dir")


def server_queries(served) -> list[str]:
    return [q for q in served[0].queries if q == "Runs"]


def _plain(value):
    from orchestrator.state import thaw

    return thaw(value)
