"""The reducer is pure and total: any sequence of events, however odd, folds to a valid state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import events as ev
from orchestrator.reducer import fold, reduce
from orchestrator.state import SweepState, TERMINAL

TRIALS = st.integers(min_value=0, max_value=4)
KINDS = st.sampled_from(["train", "eval"])
ATTEMPTS = st.integers(min_value=1, max_value=2)


def _key(trial: int, kind: str, attempt: int) -> str:
    return f"s_trial_{trial:04d}.{kind}.{attempt}"


keys = st.builds(_key, TRIALS, KINDS, ATTEMPTS)

any_event = st.one_of(
    st.builds(ev.SweepCreated, sweep=st.just("s"), config=st.just({"max_trials": 4})),
    st.builds(ev.SweepResumed, sweep=st.just("s")),
    st.builds(
        lambda t: ev.TrialSuggested(trial=t, run=f"s_trial_{t:04d}", params={"x": t}),
        TRIALS,
    ),
    st.builds(
        lambda t, k, a: ev.JobRequested(key=_key(t, k, a), trial=t, kind=k, attempt=a, argv=["x"]),
        TRIALS,
        KINDS,
        ATTEMPTS,
    ),
    st.builds(ev.JobSubmitted, key=keys),
    st.builds(ev.JobStarted, key=keys),
    st.builds(ev.JobProgress, key=keys, step=st.floats(0, 100), total=st.just(100.0)),
    st.builds(
        ev.JobExited,
        key=keys,
        exit_code=st.sampled_from([0, 1, None]),
        result=st.sampled_from([None, {"score": 1.0}]),
    ),
    st.builds(ev.TrialCompleted, trial=TRIALS, score=st.floats(-10, 10), cost=st.floats(0, 100)),
    st.builds(ev.TrialFailed, trial=TRIALS, reason=st.just("boom")),
    st.builds(ev.SweepFinished, best_trial=st.one_of(st.none(), TRIALS)),
    st.builds(ev.UnknownEvent, raw=st.just({"type": "FromTheFuture"})),
)


def assert_valid(state: SweepState) -> None:
    assert sorted(state.trials) == list(range(1, len(state.trials) + 1)), "trial numbers are gap-free"
    for number, trial in state.trials.items():
        assert trial.trial == number
        assert trial.status in {"pending", "training", "training_done", "evaluating", *TERMINAL}
        for key in trial.jobs:
            assert state.jobs[key].trial == number
        if trial.status == "completed":
            assert trial.score is not None
    for key, job in state.jobs.items():
        assert key in state.trials[job.trial].jobs
        assert job.status in {"requested", "submitted", "running", "exited"}
    assert set(state.open_trials) == {n for n, t in state.trials.items() if not t.terminal}
    assert set(state.running_jobs) == {k for k, j in state.jobs.items() if j.active}


@settings(max_examples=300, deadline=None)
@given(st.lists(any_event, max_size=60))
def test_any_sequence_folds_to_a_valid_state(events: list[ev.Event]) -> None:
    assert_valid(fold(events))


@settings(max_examples=200, deadline=None)
@given(st.lists(any_event, max_size=60))
def test_replay_gives_the_same_state(events: list[ev.Event]) -> None:
    assert fold(events) == fold(events)
    # Through JSON, as the store keeps them.
    assert fold(ev.event_from_json(ev.event_to_json(e)) for e in events) == fold(events)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_event, max_size=40), st.data())
def test_a_repeated_terminal_event_changes_nothing(events: list[ev.Event], data: st.DataObject) -> None:
    state = fold(events)
    repeatable = [e for e in events if isinstance(e, (ev.TrialCompleted, ev.TrialFailed, ev.JobExited, ev.SweepFinished))]
    if not repeatable:
        return
    event = data.draw(st.sampled_from(repeatable))
    once = reduce(state, event)
    twice = reduce(once, event)  # a duplicate delivery changes nothing
    assert twice.trials == once.trials and twice.jobs == once.jobs and twice.finished == once.finished


def test_a_trial_walks_through_the_seed_statuses() -> None:
    run = "s_trial_0001"
    steps = [
        (ev.SweepCreated(sweep="s", config={}), None),
        (ev.TrialSuggested(trial=1, run=run, params={"lr": 0.1}), "pending"),
        (ev.JobRequested(key=f"{run}.train.1", trial=1, kind="train", argv=["t"]), "training"),
        (ev.JobExited(key=f"{run}.train.1", exit_code=0, duration=3.0), "training_done"),
        (ev.JobRequested(key=f"{run}.eval.1", trial=1, kind="eval", argv=["e"]), "evaluating"),
        (ev.JobExited(key=f"{run}.eval.1", exit_code=0, result={"score": 2.0}), "evaluating"),
        (ev.TrialCompleted(trial=1, score=2.0, cost=3.0), "completed"),
        (ev.TrialFailed(trial=1, reason="late"), "completed"),  # terminal states stick
    ]
    state = SweepState()
    for event, status in steps:
        state = reduce(state, event)
        if status:
            assert state.trials[1].status == status
    assert state.trials[1].score == 2.0 and state.trials[1].reason is None


def test_out_of_order_and_unknown_events_are_ignored() -> None:
    state = fold(
        [
            ev.JobExited(key="nope.train.1", exit_code=0),
            ev.TrialCompleted(trial=7, score=1.0, cost=1.0),
            ev.SweepCreated(sweep="s", config={}),
            ev.TrialSuggested(trial=3, run="s_trial_0003", params={}),  # skips numbers: refused
            ev.event_from_json('{"type": "SomethingNew", "x": 1}'),
            ev.event_from_json("not json at all"),
        ]
    )
    assert state.sweep == "s" and len(state.trials) == 0 and len(state.jobs) == 0
    assert state.events == 6


def test_a_finished_sweep_resumed_with_more_trials_is_open_again() -> None:
    base = [
        ev.SweepCreated(sweep="s", config={"max_trials": 1}),
        ev.TrialSuggested(trial=1, run="s_trial_0001", params={}),
        ev.TrialFailed(trial=1, reason="x"),
        ev.SweepFinished(best_trial=None),
    ]
    assert fold(base).finished
    assert fold([*base, ev.SweepResumed(sweep="s", config={"max_trials": 1})]).finished
    extended = fold([*base, ev.SweepResumed(sweep="s", config={"max_trials": 3})])
    assert not extended.finished and extended.config["max_trials"] == 3
