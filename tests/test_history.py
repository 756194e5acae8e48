"""A long sweep's state holds only recent trials; ``status --all`` and the optimizer's history still see them all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizers.base import Observation, ObservationLog
from orchestrator.cli import main
from orchestrator.http import state_document
from orchestrator.reducer import fold
from orchestrator.state import RECENT_TRIALS
from stores.sqlite import SQLiteStore
from tests.conftest import long_sweep


def test_status_shows_the_recent_trials_and_all_lists_every_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "long" / "events.db")
    store.append(long_sweep(120, "long"))
    store.close()

    assert main(["status", "--sweep", "long", "--train-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("trial_")]
    assert out.startswith("Sweep long: finished, 120/120 trials done")
    assert rows == [f"trial_{n:04d}" for n in range(121 - RECENT_TRIALS, 121)]
    assert f"({120 - RECENT_TRIALS} earlier trials not shown: `status --all` lists every trial)" in out

    assert main(["status", "--sweep", "long", "--train-dir", str(tmp_path), "--all"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("trial_")]
    assert [r[0] for r in rows] == [f"trial_{n:04d}" for n in range(1, 121)]
    assert [r[1] for r in rows].count("failed") == 24 and "earlier trials not shown" not in out
    assert "reason: x" in out


def test_the_observation_log_gives_back_what_it_was_given_and_its_views_stay_fixed() -> None:
    log = ObservationLog()
    given = [
        Observation({"lr": 0.01, "batch": 64, "act": "relu"}, 0.5, 3.0),
        Observation({"lr": 0.02, "batch": 128, "act": "tanh"}, None, 1.5, failed=True),
        Observation({}, None, 0.0, failed=True),  # restored from W&B without parameters
    ]
    for obs in given[:2]:
        log.append(obs)
    view = log.view()
    log.append(given[2])
    assert list(log) == given and log[-1] == given[2] and log[1:] == given[1:]
    assert len(view) == 2 and list(view) == given[:2]  # what a worker thread was handed does not grow under it
    assert log._names[0] is log._names[1]  # the names are stored once
    with pytest.raises(IndexError):
        view[2]
    with pytest.raises(TypeError):
        view.append(given[0])


def test_for_an_optimizer_that_only_counts_the_log_keeps_only_a_count() -> None:
    log = ObservationLog(count_only=True)
    for i in range(1000):
        log.append(Observation({"lr": i / 1000}, float(i), 1.0))
    assert len(log) == 1000 and len(log.view()) == 1000 and log._values == []
    with pytest.raises(TypeError, match="reads_observations=False"):
        log[0]


def test_the_state_document_carries_the_counts_and_the_shown_trials_with_their_jobs() -> None:
    events = long_sweep(60)[:-2]  # trial 60 has been evaluated, its outcome not decided yet
    state = fold(events)
    doc = json.loads(json.dumps(state_document(state, last_seq=len(events))))
    assert (doc["trials_total"], doc["completed"], doc["failed"]) == (60, 48, 11)
    assert [t["trial"] for t in doc["trials"]] == list(range(60 - RECENT_TRIALS, 61))
    last = doc["trials"][-1]
    assert last["status"] == "evaluating" and [j["kind"] for j in last["jobs"]] == ["train", "eval"]
    assert last["jobs"][1]["result"] == {"score": 60 % 97} and doc["best_trial"] == 59
