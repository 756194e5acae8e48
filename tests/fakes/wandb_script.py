"""A scripted sweep for the W&B tests: real events, appended to a real SQLite log and folded by the real reducer.

``script(sweep)`` returns phases (lists of events); the tests append them to a ``SQLiteStore`` one phase at a time
and hand each committed event and the folded state to the mirror, the way the service does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.config import CONFIG_DIR, load_config
from orchestrator.core.reducer import reduce
from orchestrator.core.state import SweepState
from stores.sqlite import SQLiteStore

METRIC = "evaluator/eval_arena/score"


def definition(sweep: str) -> dict[str, Any]:
    config = load_config(
        CONFIG_DIR / "demo.toml",
        {
            "sweep_name": sweep,
            "max_trials": 6,
            "seed": 0,
            "protein_config": {"metric": METRIC},
        },  # a fixed seed: one definition
    )
    return config.public_dict()


def params(i: int) -> dict[str, Any]:
    return {
        "trainer.optimizer.learning_rate": 1e-3 * (1 + i / 10),
        "trainer.losses.loss_configs.ppo.clip_coef": 0.1 + 0.02 * i,
        "trainer.losses.loss_configs.ppo.ent_coef": 0.001 * i,
    }


def run_name(sweep: str, i: int) -> str:
    return f"{sweep}_trial_{i:04d}"


def suggest(sweep: str, i: int) -> list[ev.Event]:
    return [ev.TrialSuggested(trial=i, run=run_name(sweep, i), params=params(i), info={"source": "protein"})]


def train(sweep: str, i: int, steps: int = 3, ok: bool = True, attempt: int = 1) -> list[ev.Event]:
    key = f"{run_name(sweep, i)}.train.{attempt}"
    out: list[ev.Event] = [
        ev.JobRequested(key=key, trial=i, kind="train", attempt=attempt, argv=["python", "-m", "x", f"run={i}"]),
        ev.JobSubmitted(key=key, handle={"pid": 100 + i}),
        ev.JobStarted(key=key),
    ]
    out += [ev.JobProgress(key=key, step=1000.0 * (s + 1), total=1000.0 * steps, sps=700.0 + s) for s in range(steps)]
    out.append(ev.JobExited(key=key, exit_code=0 if ok else 1, duration=12.5 + i, error=None if ok else "exit 1"))
    return out


def evaluate(sweep: str, i: int, score: float) -> list[ev.Event]:
    key = f"{run_name(sweep, i)}.eval.1"
    metrics = {METRIC: score, "evaluator/eval_arena/survival_rate": 0.5 + score / 10}
    return [
        ev.JobRequested(key=key, trial=i, kind="eval", argv=["python", "-m", "x", "policy_uri=file://..."]),
        ev.JobStarted(key=key),
        ev.JobExited(key=key, exit_code=0, result={"score": score, "metrics": metrics}, duration=2.0),
        ev.TrialCompleted(trial=i, score=score, cost=12.5 + i, metrics=metrics),
    ]


def script(sweep: str) -> list[list[ev.Event]]:
    """Phase 1: trial 1 completes, trial 2 fails, trial 3 trains, trial 4 is pending.
    Phase 2: trials 3 and 4 complete, 5 trains. Phase 3: 5 completes, 6 fails; the sweep finishes (best: 3)."""
    return [
        [ev.SweepCreated(sweep=sweep, config=definition(sweep))]
        + suggest(sweep, 1)
        + train(sweep, 1)
        + evaluate(sweep, 1, 0.61)
        + suggest(sweep, 2)
        + train(sweep, 2, ok=False)
        + [ev.TrialFailed(trial=2, reason="train exited with 1")]
        + suggest(sweep, 3)
        + train(sweep, 3)[:4]
        + suggest(sweep, 4),
        train(sweep, 3)[4:]
        + evaluate(sweep, 3, 0.93)
        + train(sweep, 4)
        + evaluate(sweep, 4, 0.72)
        + suggest(sweep, 5)
        + train(sweep, 5)[:5],
        train(sweep, 5)[5:]
        + evaluate(sweep, 5, 0.88)
        + suggest(sweep, 6)
        + [ev.TrialFailed(trial=6, reason="eval printed no SWEEP_RESULT line")]
        + [ev.SweepFinished(best_trial=3)],
    ]


class Log:
    """A real SQLite event log plus the folded state, like the service holds them."""

    def __init__(self, path: Path):
        self.store = SQLiteStore(path)
        self.state = SweepState()
        for stored in self.store.read():
            self.state = reduce(self.state, stored.event)

    def append(self, events: list[ev.Event]) -> Iterator[tuple[ev.StoredEvent, SweepState]]:
        """Commit, then yield each committed event with the state after it (what ``publish`` receives)."""
        for stored in self.store.append(events):
            self.state = reduce(self.state, stored.event)
            yield stored, self.state

    def replay_to(self, subscriber: Any) -> None:
        """What the service does at start-up: replay the log, handing a subscriber the events after its cursor."""
        after = subscriber.catch_up_from()
        state = SweepState()
        for stored in self.store.read():
            state = reduce(state, stored.event)
            if after is not None and stored.seq > after:
                subscriber.publish(stored, state)

    def close(self) -> None:
        self.store.close()
