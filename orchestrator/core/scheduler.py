"""Schedulers decide, from the state alone, what should happen next. Pure: no I/O, no clock of their own.

``decide(state, now)`` is level-triggered: it looks at the whole state rather than at the last event, so after a
restart the same call picks up exactly where the sweep stood. It returns events to commit (job requests,
trial outcomes, the end of the sweep), how many new trials to ask the optimizer for, and when to look again
(a retry waiting out its backoff).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from orchestrator.core import early_stopping
from orchestrator.core import events as ev
from orchestrator.core.config import SweepConfig
from orchestrator.core.contract import extract_score, finite_number, validate_result
from orchestrator.core.jobs import job_key, run_name  # noqa: F401 - run_name was defined here
from orchestrator.core.state import JobState, SweepState, TrialState, ordered_params, thaw


@dataclass
class Decision:
    events: list[ev.Event] = field(default_factory=list)
    suggest: int = 0
    wake_at: float | None = None

    def wake(self, at: float) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def format_value(value: object) -> str:
    """How a hyperparameter is written on a job's command line (one inert argv string)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


EXIT_USAGE = 2  # the job contract: a job that exits 2 rejected its command line (orchestrator.run's usage errors)


class OptimizingScheduler:
    """Keeps up to ``max_parallel_jobs`` jobs busy: evals of trained trials first, then new trials."""

    name = "OptimizingScheduler"
    max_open_trials: int | None = None  # trials in flight at once; None means as many as slots allow

    def __init__(self, config: SweepConfig):
        self.config = config
        self.metric = config.protein_config.metric
        self.maximize = config.protein_config.goal == "maximize"

    # -- job command lines -------------------------------------------------------------------------------
    def train_argv(self, trial: TrialState) -> list[str]:
        c = self.config
        overrides = {**c.train_overrides, **ordered_params(trial, c.protein_config.parameters)}
        return [
            *c.argv_prefix(),
            f"{c.recipe_module}.{c.train_entrypoint}",
            "--args",
            f"run={trial.run}",
            "--overrides",
            *(f"{k}={format_value(v)}" for k, v in overrides.items()),
        ]

    def eval_argv(self, trial: TrialState) -> list[str]:
        c = self.config
        argv = [
            *c.argv_prefix(),
            f"{c.recipe_module}.{c.eval_entrypoint}",
            "--args",
            f"policy_uri=file://./train_dir/{trial.run}/checkpoints",  # the job contract: relative to its cwd
            f"run={trial.run}",
        ]
        if c.eval_overrides:
            argv += ["--overrides", *(f"{k}={format_value(v)}" for k, v in c.eval_overrides.items())]
        return argv

    # -- decisions -----------------------------------------------------------------------------------------
    def decide(self, state: SweepState, now: float, route: dict[str, str]) -> Decision:
        """``route`` names the dispatcher each job kind goes to."""
        d = Decision()
        if state.finished or state.sweep is None or state.stopped is not None:
            return d
        limit = self.config.max_consecutive_failures
        # Stop early only while there are trials left to spend: a sweep that used its budget just finishes.
        if limit and state.failure_streak >= limit and state.numbered < self.config.max_trials:
            d.events.append(
                ev.SweepStopped(
                    reason=f"{state.failure_streak} trials in a row failed for the same reason "
                    f"(max_consecutive_failures={limit}): {state.streak_reason}"
                )
            )
            return d
        d.events += early_stopping.decide(state)  # cancelled by the service once these are durable
        free = self.config.max_parallel_jobs - len(state.running_jobs)
        waiting: list[TrialState] = []
        open_trials = 0
        for trial in state.open_trial_list():
            open_trials += 1
            want = self._next_step(trial, now, d)
            if want is None:
                continue
            kind, attempt = want
            if kind == "train" and attempt == 1:
                waiting.append(trial)  # new trials wait behind evals and retries
            elif free > 0:
                d.events.append(self._request(trial, kind, attempt, route))
                free -= 1
        for trial in waiting:
            if free <= 0:
                break
            d.events.append(self._request(trial, "train", 1, route))
            free -= 1
        remaining = self.config.max_trials - state.numbered
        if self.max_open_trials is not None:
            d.suggest = min(remaining, max(0, self.max_open_trials - open_trials))
        else:
            d.suggest = min(remaining, max(0, free))
        if remaining <= 0 and open_trials == 0 and not d.events:
            d.events.append(ev.SweepFinished(best_trial=state.best_trial))
        return d

    def _next_step(self, trial: TrialState, now: float, d: Decision) -> tuple[str, int] | None:
        """The job this trial needs next, or None (busy, waiting, or just decided an outcome)."""
        trains = trial.jobs_of("train")
        if not trains:
            return ("train", 1)
        train = trains[-1]
        if train.active:
            return None
        if trial.stop_reason is not None and not train.succeeded:  # (a train job that finished first goes on)
            return self._stopped(trial, train, d)
        if not train.succeeded:
            return self._retry_or_fail(trial, train, _job_error(train), now, d)
        evals = trial.jobs_of("eval")
        if not evals:
            return ("eval", 1)
        last = evals[-1]
        if last.active:
            return None
        reason = _job_error(last) if not last.succeeded else None
        if reason is None:
            try:
                d.events.append(self._completed(trial, train, last))
                return None
            except ValueError as exc:
                reason = str(exc)
        return self._retry_or_fail(trial, last, reason, now, d)

    def _stopped(self, trial: TrialState, train: JobState, d: Decision) -> tuple[str, int] | None:
        """A trial stopped early ends "stopped" with its best reported score, the step it reached and what its
        jobs ran; with ``evaluate_stopped`` its eval job runs first and, if it succeeds, gives the score."""
        evals = trial.jobs_of("eval")
        if self.config.early_stopping.evaluate_stopped and not evals:
            return ("eval", 1)
        if evals and evals[-1].active:
            return None
        score = trial.curve[-1][1] if trial.curve else None  # its last reported value
        if evals and evals[-1].succeeded:
            try:
                score = extract_score(thaw(evals[-1].result), self.metric)
            except ValueError:
                pass
        d.events.append(
            ev.TrialStopped(
                trial=trial.trial,
                score=score,
                step=trial.reported_step or 0.0,
                cost=trial.spent,
                metrics=thaw(trial.metrics),
            )
        )
        return None

    def _retry_or_fail(
        self, trial: TrialState, job: JobState, reason: str, now: float, d: Decision
    ) -> tuple[str, int] | None:
        if job.exit_code == EXIT_USAGE:  # the job refused its command line: another attempt would do the same
            d.events.append(
                ev.TrialFailed(
                    trial=trial.trial,
                    reason=f"{job.kind} failed (usage error, exit code {EXIT_USAGE}, not retried): {reason}",
                )
            )
            return None
        if job.attempt <= self.config.max_retries:
            ready_at = (job.ended_at or now) + self.config.retry_backoff * 2 ** (job.attempt - 1)
            if now >= ready_at:
                return (job.kind, job.attempt + 1)
            d.wake(ready_at)
            return None
        tries = f"{job.attempt} attempt{'s' if job.attempt > 1 else ''}"
        d.events.append(ev.TrialFailed(trial=trial.trial, reason=f"{job.kind} failed after {tries}: {reason}"))
        return None

    def _request(self, trial: TrialState, kind: str, attempt: int, route: dict[str, str]) -> ev.JobRequested:
        argv = self.train_argv(trial) if kind == "train" else self.eval_argv(trial)
        return ev.JobRequested(
            key=job_key(trial.run, kind, attempt),
            trial=trial.trial,
            kind=kind,
            attempt=attempt,
            argv=argv,
            dispatcher=route[kind],
        )

    def _completed(self, trial: TrialState, train: JobState, evaluation: JobState) -> ev.TrialCompleted:
        """The trial's outcome; ValueError with the reason when a result breaks the contract. The results were
        checked when they were read, but a log written by an older version may hold anything."""
        score = extract_score(thaw(evaluation.result), self.metric)
        train_result = validate_result(thaw(train.result) or {})
        eval_result = validate_result(thaw(evaluation.result) or {})
        cost = train_result.get("cost", eval_result.get("cost"))
        cost = finite_number(cost, "cost") if cost is not None else -1.0
        if cost < 0:
            cost = train.duration  # the documented default: seconds of training
        metrics = {**(train_result.get("metrics") or {}), **(eval_result.get("metrics") or {})}
        return ev.TrialCompleted(trial=trial.trial, score=score, cost=float(cost), metrics=metrics)


class SequentialScheduler(OptimizingScheduler):
    """One trial at a time: the optimizer sees every result before it proposes again."""

    name = "SequentialScheduler"
    max_open_trials = 1


def _job_error(job: JobState) -> str:
    if job.error:
        return job.error
    return f"exit code {job.exit_code}"


def make_scheduler(config: SweepConfig) -> OptimizingScheduler:
    return SequentialScheduler(config) if config.scheduler == "sequential" else OptimizingScheduler(config)
