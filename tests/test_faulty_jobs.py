"""Faulty jobs: real sweeps through the service (in-process), real subprocess jobs, the real SQLite log.

Every way a job can go wrong (a non-zero exit, a crash before any output, a hang past its limit, garbage or a
malformed result, a score that is not a finite number) is retried as the sweep says (``max_retries``, doubling
``retry_backoff``), then the trial fails with a reason a person can act on, the optimizer hears of it, and the
sweep completes. An eval that fails after a good train is evaluated again; the train job is not run again.

The jobs are ``recipes.toy`` through the recipe runner (its ``toy.fail_mode`` knobs) and ``tests/jobs/bad_job.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from optimizers.base import Observation, Suggestion
from orchestrator import events as ev
from orchestrator.config import SweepConfig
from orchestrator.logs import configure_logging
from orchestrator.reducer import fold
from orchestrator.runtime import build_service
from orchestrator.state import SweepState
from stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
BAD_JOB = ROOT / "tests" / "jobs" / "bad_job.py"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(os.devnull, "w") as devnull:
        configure_logging("json", stream=devnull)
        yield tmp_path
    configure_logging("json", stream=sys.stdout)


def sweep(
    name: str,
    *,
    trials: int = 2,
    parallel: int = 2,
    retries: int = 1,
    backoff: float = 0.05,
    train: dict[str, Any] | None = None,
    evaluate: dict[str, Any] | None = None,
    command: Sequence[str] | None = None,
    **fields: Any,
) -> SweepConfig:
    settings = fields.pop("settings", {})
    return SweepConfig(
        sweep_name=name,
        max_trials=trials,
        max_parallel_jobs=parallel,
        max_retries=retries,
        retry_backoff=backoff,
        recipe_module="recipes.toy",
        monitoring_interval=600,
        seed=3,
        train_overrides={"toy.steps": 2, "toy.step_seconds": 0.01, **(train or {})},
        eval_overrides=evaluate or {},
        capture_output=False,
        wandb={"mode": "disabled"},  # the W&B mirror has its own tests
        protein_config={
            "metric": "score",
            "method": "random",
            "parameters": {"toy.x": {"distribution": "uniform", "min": -1.0, "max": 1.0}},
            "settings": settings,
        },
        **({"command": list(command)} if command else {}),
        **fields,
    )


class SpyOptimizer:
    """Wraps the sweep's optimizer and keeps every set of observations it was given."""

    reads_observations = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[Observation]] = []

    def suggest(self, observations: Sequence[Observation], pending: Sequence[dict], n: int = 1) -> list[Suggestion]:
        self.calls.append(list(observations))
        return self.inner.suggest(observations, pending, n)


def run(config: SweepConfig, spy: bool = False) -> tuple[SweepState, list[ev.Event], SpyOptimizer | None]:
    service = build_service(config)
    optimizer = None
    if spy:
        optimizer = service.optimizer = SpyOptimizer(service.optimizer)

    async def bounded() -> SweepState:
        with anyio.fail_after(120):
            return await service.run()

    live = anyio.run(bounded)
    store = SQLiteStore(config.sweep_dir / "events.db")
    try:
        events = [s.event for s in store.read(0)]
    finally:
        store.close()
    replayed = fold(events)
    assert live == replayed, "the live state must equal a replay of the log"
    assert replayed.finished, "the sweep must always complete"
    assert isinstance(events[-1], ev.SweepFinished)
    return replayed, events, optimizer


def attempts(state: SweepState, trial: int, kind: str) -> list[int]:
    return [j.attempt for j in state.trial(trial).jobs_of(kind)]


def reasons(events: list[ev.Event]) -> dict[int, str]:
    return {e.trial: e.reason for e in events if isinstance(e, ev.TrialFailed)}


# -- non-zero exits and crashes ------------------------------------------------------------------------------------


def test_a_job_that_exits_non_zero_is_retried_with_doubling_backoff_then_fails_with_its_output(workdir: Path) -> None:
    config = sweep("exit", retries=2, backoff=0.2, train={"toy.fail_mode": "exit", "toy.exit_code": 7})
    state, events, _ = run(config)
    why = reasons(events)
    assert sorted(why) == [1, 2]
    for trial in (1, 2):
        assert attempts(state, trial, "train") == [1, 2, 3]  # max_retries=2: three attempts in all
        assert attempts(state, trial, "eval") == []
        reason = why[trial]
        assert reason.startswith("train failed after 3 attempts: exited with code 7")
        assert "toy train: exiting with 7 on purpose" in reason  # the job's last output lines are quoted
        assert "output.log" in reason  # and where the whole output is
        jobs = state.trial(trial).jobs_of("train")
        for before, after, wait in zip(jobs, jobs[1:], (0.2, 0.4)):  # backoff doubles between attempts
            assert after.requested_at - before.ended_at >= wait * 0.95
    assert state.trial(1).status == state.trial(2).status == "failed"


@pytest.mark.parametrize(
    "mode, command, expected",
    [
        ("crash", None, ["exited with code 1", "RuntimeError: toy train crashed on purpose"]),
        ("kill", None, ["killed by signal 9 (SIGKILL)"]),
        ("silent", [sys.executable, str(BAD_JOB)], ["exited with code 5", "(it printed nothing;"]),
        ("missing", ["/nonexistent/bin/python3"], ["could not start the job", "/nonexistent/bin/python3"]),
    ],
)
def test_a_job_that_crashes_is_retried_then_fails_with_an_actionable_reason(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, mode: str, command: list[str] | None, expected: list[str]
) -> None:
    monkeypatch.setenv("BAD_JOB_MODE", mode)
    train = {"toy.fail_mode": mode} if command is None else {}
    state, events, _ = run(sweep(mode, train=train, command=command))
    why = reasons(events)
    assert sorted(why) == [1, 2]
    for trial in (1, 2):
        assert attempts(state, trial, "train") == [1, 2]
        assert why[trial].startswith("train failed after 2 attempts: ")
        for text in expected:
            assert text in why[trial], why[trial]


# -- hangs -------------------------------------------------------------------------------------------------------


def test_a_job_that_hangs_is_stopped_at_the_limit_derived_from_max_suggestion_cost(workdir: Path) -> None:
    # No job_timeout: the limit is 2 x max_suggestion_cost = 2 s.
    config = sweep("hang", train={"toy.fail_mode": "hang"}, settings={"max_suggestion_cost": 1.0})
    assert config.timeout == 2.0
    state, events, _ = run(config)
    why = reasons(events)
    assert sorted(why) == [1, 2]
    for trial in (1, 2):
        assert attempts(state, trial, "train") == [1, 2]
        assert "timed out after" in why[trial] and "(limit 2 s)" in why[trial], why[trial]
        for job in state.trial(trial).jobs_of("train"):
            assert 2.0 <= job.duration < 10.0  # stopped at its limit, not at the launcher's kill grace


def test_job_timeout_overrides_the_derived_limit(workdir: Path) -> None:
    config = sweep("hang2", trials=1, retries=0, job_timeout=1.5, train={"toy.fail_mode": "hang"})
    assert config.timeout == 1.5
    _, events, _ = run(config)
    reason = reasons(events)[1]
    assert reason.startswith("train failed after 1 attempt: timed out after") and "(limit 1.5 s)" in reason


# -- results that are garbage, malformed or not a finite number ---------------------------------------------------


@pytest.mark.parametrize(
    "evaluate, bad_job, expected",
    [
        ({"toy.fail_mode": "no_result", "toy.fail_in": "eval"}, None, "printed no SWEEP_RESULT line"),
        ({"toy.fail_mode": "malformed_result", "toy.fail_in": "eval"}, None, "malformed SWEEP_RESULT line"),
        ({"toy.fail_mode": "nan_score", "toy.fail_in": "eval"}, None, "the reported score is nan, not a finite number"),
        ({"toy.fail_mode": "inf_score", "toy.fail_in": "eval"}, None, "the reported score is inf, not a finite number"),
        ({"toy.fail_mode": "string_score", "toy.fail_in": "eval"}, None, "the reported score 'high' is not a number"),
        ({}, "garbage", "printed no SWEEP_RESULT line"),
        ({}, "not_an_object", "must hold a JSON object, got list"),
    ],
)
def test_an_eval_with_a_bad_result_is_evaluated_again_then_fails(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, evaluate: dict[str, Any], bad_job: str | None, expected: str
) -> None:
    command = None
    if bad_job:
        monkeypatch.setenv("BAD_JOB_MODE", bad_job)
        monkeypatch.setenv("BAD_JOB_KIND", "eval")
        command = [sys.executable, str(BAD_JOB)]
    state, events, _ = run(sweep(f"bad_{bad_job or evaluate['toy.fail_mode']}", evaluate=evaluate, command=command))
    why = reasons(events)
    assert sorted(why) == [1, 2]
    for trial in (1, 2):
        assert attempts(state, trial, "train") == [1]  # trained once
        assert attempts(state, trial, "eval") == [1, 2]  # evaluated again
        assert why[trial].startswith("eval failed after 2 attempts: ") and expected in why[trial], why[trial]


# -- eval-only failures and the optimizer ----------------------------------------------------------------------


def test_an_eval_that_fails_once_is_re_evaluated_not_retrained(workdir: Path) -> None:
    # flaky: the first eval of each run exits 3, the second behaves. The eval job learns its fail_in from the
    # checkpoint the train job wrote.
    state, events, _ = run(sweep("flaky", train={"toy.fail_mode": "flaky", "toy.fail_in": "eval"}))
    assert reasons(events) == {}
    for trial in (1, 2):
        t = state.trial(trial)
        assert t.status == "completed" and t.score is not None
        assert attempts(state, trial, "train") == [1]
        assert attempts(state, trial, "eval") == [1, 2]
        first, second = state.trial(trial).jobs_of("eval")
        assert first.exit_code == 3 and "failing this first attempt on purpose" in (first.error or "")
        assert second.succeeded
        run_dir = workdir / "train_dir" / "flaky" / t.run
        assert sorted(p.name for p in run_dir.iterdir()) == ["eval.1", "eval.2", "train.1"]


def test_an_eval_that_keeps_failing_fails_the_trial_without_retraining(workdir: Path) -> None:
    state, events, _ = run(sweep("evalfail", train={"toy.fail_mode": "exit", "toy.fail_in": "eval"}))
    why = reasons(events)
    for trial in (1, 2):
        assert attempts(state, trial, "train") == [1] and attempts(state, trial, "eval") == [1, 2]
        assert why[trial].startswith("eval failed after 2 attempts: exited with code 3")
        assert "toy eval: exiting with 3 on purpose" in why[trial]


def test_failed_trials_reach_the_optimizer(workdir: Path) -> None:
    # One trial at a time, so every suggestion after the first is made knowing the failures before it.
    config = sweep("told", trials=3, parallel=1, retries=0, scheduler="sequential", train={"toy.fail_mode": "exit"})
    state, events, spy = run(config, spy=True)
    assert spy is not None and len(spy.calls) == 3
    assert [len(c) for c in spy.calls] == [0, 1, 2]
    for seen in spy.calls[1:]:
        assert all(o.failed and o.score is None for o in seen)
    assert [o.params for o in spy.calls[2]] == [dict(state.trial(i).params) for i in (1, 2)]
    assert all(o.cost > 0 for seen in spy.calls[1:] for o in seen)  # a failure costs the seconds its jobs ran


def test_a_mix_of_good_and_failing_trials_completes_with_the_best_of_the_good(workdir: Path) -> None:
    # The fail mode is a searched parameter here, so some trials fail and others do not.
    config = sweep("mix", trials=3, parallel=2, retries=0)
    params = dict(config.protein_config.parameters)
    params["toy.fail_mode"] = {"distribution": "categorical", "choices": ["none", "exit"]}
    config = config.model_copy(
        update={
            "protein_config": config.protein_config.model_validate(
                {**config.protein_config.model_dump(), "parameters": params}
            )
        }
    )
    state, events, _ = run(config)
    statuses = {t.trial: (t.params["toy.fail_mode"], t.status) for t in state.shown_trials()}
    assert {status for _, status in statuses.values()} == {"completed", "failed"}, statuses
    for mode, status in statuses.values():
        assert status == ("completed" if mode == "none" else "failed")
    good = [t for t in state.shown_trials() if t.status == "completed"]
    best = events[-1].best_trial
    assert best == (max(good, key=lambda t: t.score).trial if good else None)
