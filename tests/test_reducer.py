"""The reducer is pure and total: any sequence of events, however odd, folds to a valid state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import events as ev
from orchestrator.history import all_trials, ended_trials
from orchestrator.reducer import fold, reduce
from orchestrator.state import RECENT_TRIALS, SweepState
from tests.conftest import long_sweep

TRIALS = st.integers(min_value=0, max_value=4)
KINDS = st.sampled_from(["train", "eval"])
ATTEMPTS = st.integers(min_value=1, max_value=2)


def _key(trial: int, kind: str, attempt: int) -> str:
    return f"s_trial_{trial:04d}.{kind}.{attempt}"


keys = st.builds(_key, TRIALS, KINDS, ATTEMPTS)

any_event = st.one_of(
    st.builds(
        ev.SweepCreated,
        sweep=st.just("s"),
        config=st.sampled_from([{"max_trials": 4}, {"max_trials": 4, "protein_config": {"goal": "minimize"}}]),
    ),
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


def assert_valid(state: SweepState, events: list[ev.Event]) -> None:
    open_trials = state.open_trials
    ended = list(ended_trials(events))
    # Every numbered trial is in flight or has ended, once; the state keeps only the recent ended ones.
    numbers = sorted([*open_trials, *(t.trial for t in ended)])
    assert numbers == list(range(1, state.numbered + 1)), "trial numbers are gap-free"
    assert state.completed == sum(t.status == "completed" for t in ended)
    assert state.failed == sum(t.status == "failed" for t in ended)
    assert state.recent == tuple(ended[-RECENT_TRIALS:])
    for number, trial in open_trials.items():
        assert trial.trial == number and not trial.terminal
        assert trial.status in {"pending", "training", "training_done", "evaluating"}
        for job in trial.jobs:
            assert job.trial == number and state.job_trials[job.key] == number
            assert job.status in {"requested", "submitted", "running", "exited"}
    for trial in ended:
        assert trial.terminal and (trial.status != "completed" or trial.score is not None)
    jobs = [j for t in open_trials.values() for j in t.jobs]
    assert set(state.job_trials) == {j.key for j in jobs}
    assert dict(state.running_jobs) == {j.key: j.trial for j in jobs if j.active}
    # The best trial is the best completed one (the earliest among equals).
    done = [t for t in ended if t.status == "completed"]
    goal = state.config.get("protein_config", {}).get("goal", "maximize")
    expected = None
    for t in done:
        if expected is None or (t.score > expected.score if goal == "maximize" else t.score < expected.score):
            expected = t
    assert state.best == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(any_event, max_size=60))
def test_any_sequence_folds_to_a_valid_state(events: list[ev.Event]) -> None:
    assert_valid(fold(events), events)


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
    repeatable = [
        e for e in events if isinstance(e, (ev.TrialCompleted, ev.TrialFailed, ev.JobExited, ev.SweepFinished))
    ]
    if not repeatable:
        return
    event = data.draw(st.sampled_from(repeatable))
    once = reduce(state, event)
    twice = reduce(once, event)  # a duplicate delivery changes nothing
    assert twice.open_trials == once.open_trials and twice.recent == once.recent and twice.best == once.best
    assert (twice.completed, twice.failed, twice.finished) == (once.completed, once.failed, once.finished)


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
            assert state.trial(1).status == status
    assert state.trial(1).score == 2.0 and state.trial(1).reason is None
    assert [j.key for j in state.trial(1).jobs] == [f"{run}.train.1", f"{run}.eval.1"]  # it keeps its jobs
    assert state.best == state.trial(1) and len(state.open_trials) == len(state.job_trials) == 0


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
    assert state.sweep == "s" and state.numbered == 0 and len(state.open_trials) == 0 and len(state.job_trials) == 0
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


def test_the_state_of_a_long_sweep_holds_only_recent_trials_and_the_log_has_them_all() -> None:
    events = long_sweep(500)
    state = fold(events)
    assert state.finished and state.numbered == 500 and (state.completed, state.failed) == (400, 100)
    assert [t.trial for t in state.recent] == list(range(451, 501))
    assert len(state.open_trials) == len(state.job_trials) == len(state.running_jobs) == 0
    assert state.best_trial == 96 and state.best.score == 96  # the first of the trials that scored 96
    again, trials = all_trials(events)
    assert again == state and [t.trial for t in trials] == list(range(1, 501))
    assert trials[95].score == 96 and trials[4].status == "failed" and len(trials[0].jobs) == 2
