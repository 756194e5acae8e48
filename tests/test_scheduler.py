"""The scheduler's job command lines."""

from __future__ import annotations

from optimizers import ParameterConfig, ProteinConfig
from orchestrator.config import SweepConfig
from orchestrator.scheduler import OptimizingScheduler
from orchestrator.state import TrialState, freeze


def test_overrides_follow_the_sweeps_parameter_order() -> None:
    names = [f"trainer.p{i:02d}" for i in range(12)]  # enough keys that a hash order would differ
    config = SweepConfig(
        sweep_name="s",
        protein_config=ProteinConfig(
            parameters={n: ParameterConfig(distribution="uniform", min=0, max=1) for n in names}
        ),
        train_overrides={"trainer.total_timesteps": 1000},
    )
    trial = TrialState(1, "s_trial_0001", freeze({n: 0.5 for n in reversed(names)}))
    argv = OptimizingScheduler(config).train_argv(trial)
    overrides = argv[argv.index("--overrides") + 1 :]
    assert overrides == ["trainer.total_timesteps=1000", *(f"{n}=0.5" for n in names)]
    assert argv[argv.index("--args") + 1] == "run=s_trial_0001"


def _failing(trials: int, reason: str) -> list:
    from orchestrator import events as ev

    out: list = []
    for n in range(1, trials + 1):
        run = f"s_trial_{n:04d}"
        out += [
            ev.TrialSuggested(trial=n, run=run, params={"x": 0.5}),
            ev.TrialFailed(trial=n, reason=reason.format(run=run)),
        ]
    return out


def test_a_doomed_sweep_is_stopped_from_the_log_alone_and_a_resume_starts_the_count_again() -> None:
    from orchestrator import events as ev
    from orchestrator.reducer import fold

    config = SweepConfig(
        sweep_name="s",
        max_trials=10,
        protein_config=ProteinConfig(parameters={"x": ParameterConfig(distribution="uniform", min=0, max=1)}),
    )
    created = [ev.SweepCreated(sweep="s", config=config.public_dict())]
    # Same reason in all but the log path, which names the run: one reason.
    reason = (
        "train failed after 2 attempts: exited with code 1; last output (td/{run}/train.2/output.log):\n"
        "    File x, line 3\n    RuntimeError: boom"
    )
    scheduler = OptimizingScheduler(config)
    two = fold([*created, *_failing(2, reason)])
    assert two.failure_streak == 2 and not scheduler.decide(two, 0.0, {"train": "local", "eval": "local"}).events
    three = fold([*created, *_failing(3, reason)])
    (stop,) = scheduler.decide(three, 0.0, {"train": "local", "eval": "local"}).events
    assert isinstance(stop, ev.SweepStopped)
    assert stop.reason.endswith("train failed after 2 attempts: exited with code 1: RuntimeError: boom")
    stopped = fold([stop], three)
    assert stopped.stopped == stop.reason
    assert scheduler.decide(stopped, 0.0, {"train": "local", "eval": "local"}).suggest == 0  # nothing new
    resumed = fold([ev.SweepResumed(sweep="s", config=config.public_dict())], stopped)
    assert resumed.stopped is None and resumed.failure_streak == 0
    assert scheduler.decide(resumed, 0.0, {"train": "local", "eval": "local"}).suggest == 1
    # Different reasons do not add up.
    mixed = fold([*created, *_failing(2, reason), *_failing(3, "eval failed: exited with code 4")[4:]])
    assert mixed.failure_streak == 1
    # 0 (how a TOML file says never) and null never stop a sweep, however long the streak.
    for never in (0, None):
        patient = OptimizingScheduler(config.model_copy(update={"max_consecutive_failures": never}))
        five = fold([*created, *_failing(5, reason)])
        assert not [
            e for e in patient.decide(five, 0.0, {"train": "local", "eval": "local"}).events if e.type == "SweepStopped"
        ]
