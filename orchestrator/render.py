"""What people read: one line per event (shared by serve and attach), the trial table and the final summary."""

from __future__ import annotations

import re
import time
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.failures import clip, explain
from orchestrator.core.jobs import trial_label
from orchestrator.core.state import SweepState, TrialState, ordered_params

# C0 controls but tab and newline, DEL, C1 controls (ESC starts the terminal's escape sequences; CR and BS rewrite
# the line), and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters shown escaped (``\x1b``), never obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def short(run: str) -> str:
    """``ppo_trial_0007`` -> ``trial_0007``: the seed's per-trial prefix."""
    idx = run.rfind("trial_")
    return run[idx:] if idx >= 0 else run


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def _trial_run(state: SweepState, trial: int) -> str:
    t = state.trial(trial)
    return short(t.run) if t else trial_label(trial)


def describe(event: ev.Event, state: SweepState, scheduler: str = "OptimizingScheduler") -> tuple[str, str] | None:
    """``(component, message)`` for an event just folded into ``state``; None for events not worth a line."""
    max_trials = state.config.get("max_trials", "?")  # not thaw(config): this runs for every event
    match event:
        case ev.SweepCreated():
            return "SweepOrchestrator", f"Starting sweep {event.sweep}: {max_trials} trials"
        case ev.SweepResumed():
            return "SweepOrchestrator", f"Resuming sweep {event.sweep}: {state.ended}/{state.numbered} trials done"
        case ev.TrialSuggested():
            source = event.info.get("source", "")
            note = f" [{source}]" if source else ""
            if event.info.get("fallback"):
                note += f" (random fallback: {event.info['fallback']})"
            return scheduler, f"Scheduling trial {event.trial}/{max_trials}{note}: {fmt_params(event.params)}"
        case ev.JobRequested():
            return _trial_run(state, event.trial), f"{event.kind} job {event.key} requested on {event.dispatcher}"
        case ev.JobSubmitted():
            how = "reattached to" if event.reattached else "submitted"
            job = state.job(event.key)
            ident = next((f"{k} {event.handle[k]}" for k in ("job_pid", "pid", "job_id") if k in event.handle), "")
            where = f" ({ident})" if ident else ""
            return (_trial_run(state, job.trial) if job else event.key), f"{how} {event.key}{where}"
        case ev.JobProgress():
            job = state.job(event.key)
            if job is None:
                return None
            total = event.total or 0
            pct = 100 * event.step / total if total else 0.0
            return _trial_run(
                state, job.trial
            ), f"{job.kind}: {pct:.1f}% of {total / 1e3:.2f} ksteps, {event.sps or 0:.0f} sps"
        case ev.JobExited():
            job = state.job(event.key)
            if job is None:
                return None
            if event.exit_code == 0 and not event.error:
                return _trial_run(
                    state, job.trial
                ), f"{job.kind} finished in {event.duration:.1f}s{_result(event.result)}"
            return _trial_run(
                state, job.trial
            ), f"{job.kind} attempt {job.attempt} failed: {event.error or f'exit code {event.exit_code}'}"
        case ev.TrialCompleted():
            return (
                "SweepOrchestrator",
                f"{_trial_run(state, event.trial)} completed: score={event.score:.4g} cost={event.cost:.1f}",
            )
        case ev.TrialStopRequested():
            return (
                "SweepOrchestrator",
                f"stopping {_trial_run(state, event.trial)} early at step {event.step:g}: {event.reason}",
            )
        case ev.TrialStopped():
            score = f"{event.score:.4g}" if event.score is not None else "-"
            return (
                "SweepOrchestrator",
                f"{_trial_run(state, event.trial)} stopped early at step {event.step:g}: "
                f"score={score} cost={event.cost:.1f}",
            )
        case ev.TrialFailed():
            # the job's failure line just above quoted its output; here, the line that explains it
            return "SweepOrchestrator", f"{_trial_run(state, event.trial)} failed: {explain(event.reason)}"
        case ev.SweepStopped():
            return "SweepOrchestrator", f"Sweep stopped: {event.reason}"
        case ev.SweepFinished():
            best = f"best is {_trial_run(state, event.best_trial)}" if event.best_trial else "no trial completed"
            return "SweepOrchestrator", f"Sweep finished: {best}"
    return None


def _result(result: dict[str, Any] | None) -> str:
    """A job's reported score and cost, as a short tail for its "finished" line."""
    if not result:
        return ""
    shown = [f"{k}={fmt_value(result[k])}" for k in ("score", "cost") if isinstance(result.get(k), (int, float))]
    return f": {' '.join(shown)}" if shown else ""


def headline(state: SweepState, serving: bool | None = None) -> str:
    """One line: the sweep's phase (is serve running, if known), trials ended against max_trials, in flight."""
    if state.finished:
        phase = "finished"
    elif state.stopped:
        phase = "stopped (see the reason below; the same serve command resumes it)"
    elif serving is False:
        phase = "serve is not running"
    else:
        phase = "in progress"
    max_trials = state.config.get("max_trials", state.numbered)
    running = len(state.open_trials)
    counts = f"{state.ended}/{max_trials} trials done ({_ended_counts(state)}"
    counts += f", {running} in flight)" if running else ")"
    line = f"Sweep {state.sweep}: {phase}, {counts}"
    if state.stopped:
        line += f"\nStopped: {state.stopped}"
    return line


def _ended_counts(state: SweepState) -> str:
    """``3 completed, 1 failed`` and, when early stopping stopped any, ``, 2 stopped``."""
    text = f"{state.completed} completed, {state.failed} failed"
    return text + (f", {state.early_stopped} stopped" if state.early_stopped else "")


def _progress(trial: TrialState) -> str:
    if not trial.jobs:
        return ""
    job = trial.jobs[-1]
    if job.active and job.total:
        return f"{job.kind} {100 * (job.step or 0) / job.total:.0f}%"
    return f"{job.kind} {job.status}"


def _runtime(trial: TrialState, now: float) -> float:
    return sum((j.ended_at or now) - j.started_at for j in trial.jobs if j.started_at is not None)


def trial_table(state: SweepState, now: float | None = None, trials: list[TrialState] | None = None) -> str:
    """The trials in flight and the recently ended ones (or ``trials``, e.g. every trial from the log)."""
    now = now or time.time()
    header = f"{'trial':<12} {'status':<14} {'progress':<16} {'score':>10} {'cost':>9} {'runtime':>9}"
    lines = [header, "-" * len(header)]
    shown = state.shown_trials() if trials is None else trials
    hidden = state.numbered - len(shown)
    if hidden > 0:
        lines.append(f"({hidden} earlier trials not shown: `status --all` lists every trial)")
    for t in shown:
        score = f"{t.score:.4g}" if t.score is not None else "-"
        cost = f"{t.cost:.1f}" if t.cost is not None else "-"
        lines.append(
            f"{short(t.run):<12} {t.status:<14} {_progress(t):<16} {score:>10} {cost:>9} {_runtime(t, now):>8.1f}s"
        )
        if t.status == "failed" and t.reason:
            lines.append(f"{'':<12} reason: {clip(explain(t.reason))}")
        elif t.stop_reason is not None:
            lines.append(f"{'':<12} stopped at step {t.stop_step or 0:g}: {clip(t.stop_reason)}")
    return "\n".join(lines)


def summary(state: SweepState, trials: list[TrialState] | None = None) -> str:
    """The end-of-sweep report: counts, the trial table (see ``trial_table``) and the best trial's config."""
    bar = "=" * 80
    lines = [bar, "SWEEP SUMMARY", bar, f"Sweep: {state.sweep}"]
    if state.stopped:
        lines.append(f"Stopped: {state.stopped}")
    lines.append(f"Trials: {state.numbered} ({_ended_counts(state)})")
    lines += ["", trial_table(state, trials=trials), ""]
    best_trial = state.best
    if best_trial is None:
        lines.append("Best run: none (no trial completed)")
    else:
        lines.append(f"Best run: {best_trial.run}  score={best_trial.score:.6g}  cost={best_trial.cost:.1f}")
        lines.append("Best config:")
        names = (state.config.get("protein_config") or {}).get("parameters") or {}
        lines += [f"  {k}: {fmt_value(v)}" for k, v in ordered_params(best_trial, names).items()]
    lines.append(bar)
    return "\n".join(lines)
