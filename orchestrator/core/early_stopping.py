"""Early stopping: which trials in training to stop, decided from the state alone (pure, like the scheduler).

Trials report learning-curve points (``SWEEP_REPORT``). Rungs sit at ``grace_steps * reduction_factor**k``
training steps; when a trial's report first reaches a rung, the reducer records its best score so far there, in
the order trials arrive (``SweepState.rungs``). A trial is judged at a rung against the trials that reached it
before it (and itself), once at least ``min_trials`` have, so a judgement never changes later and a replay of the
log reproduces every decision:

- ``median``: stopped if its best score so far is worse than the median of the others' at that rung;
- ``asha`` (asynchronous successive halving): stopped unless it ranks in the top ``1/reduction_factor`` there
  (at least one trial always continues).

``goal = "minimize"`` turns "worse" and "top" around.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.state import SweepState, TrialState


def rung_of(step: float, settings: Any) -> int:
    """The highest rung ``step`` has reached, or -1 before the first (``settings``: early_stopping's fields)."""
    grace = float(settings.get("grace_steps", 1.0))
    factor = float(settings.get("reduction_factor", 3.0))
    if step < grace or grace <= 0 or factor <= 1:
        return -1
    k = int(math.floor(math.log(step / grace) / math.log(factor) + 1e-9))
    return min(k, 64)


def rung_step(k: int, settings: Any) -> float:
    return float(settings.get("grace_steps", 1.0)) * float(settings.get("reduction_factor", 3.0)) ** k


def settings_of(config: Any) -> Any:
    return config.get("early_stopping") or {}


def decide(state: SweepState) -> list[ev.Event]:
    """A ``TrialStopRequested`` for every trial in training that its rungs judge poor."""
    settings = settings_of(state.config)
    method = settings.get("method", "none")
    if method == "none":
        return []
    minimize = (state.config.get("protein_config") or {}).get("goal", "maximize") == "minimize"
    out: list[ev.Event] = []
    for trial in state.open_trial_list():
        if trial.status != "training" or trial.stop_reason is not None:
            continue
        for k, position in enumerate(trial.rung_positions):
            reason = judge(method, state.rungs.get(k, ())[: position + 1], settings, minimize)
            if reason is not None:
                where = f"rung {k} (step {rung_step(k, settings):g})"
                step = trial.reported_step or 0.0
                out.append(ev.TrialStopRequested(trial=trial.trial, step=step, reason=f"{method} at {where}: {reason}"))
                break
    return out


def judge(method: str, arrived: tuple[tuple[int, float], ...], settings: Any, minimize: bool) -> str | None:
    """Why the last of ``arrived`` (the trials at a rung, in order, it last) is to stop, or None to continue."""
    if len(arrived) < int(settings.get("min_trials", 5)):
        return None
    sign = -1.0 if minimize else 1.0  # compare as "higher is better"
    mine = sign * arrived[-1][1]
    if method == "median":
        median = statistics.median(sign * v for _, v in arrived[:-1])
        return (
            f"best {sign * mine:.4g} worse than the median {sign * median:.4g} of {len(arrived) - 1}"
            if mine < median
            else None
        )
    if method == "asha":
        keep = max(1, int(len(arrived) // float(settings.get("reduction_factor", 3.0))))
        ranked = sorted(arrived, key=lambda tv: (-sign * tv[1], tv[0]))
        rank = [t for t, _ in ranked].index(arrived[-1][0])
        return f"ranked {rank + 1} of {len(arrived)}, outside the top {keep}" if rank >= keep else None
    return None


def stop_requested_jobs(state: SweepState) -> list[tuple[TrialState, str]]:
    """Train jobs still running although their trial was told to stop (what a restart must cancel again)."""
    out = []
    for trial in state.open_trial_list():
        if trial.stop_reason is None:
            continue
        for job in trial.jobs_of("train"):
            if job.active:
                out.append((trial, job.key))
    return out


LIFT_WINDOW = 256  # completed trials (the latest at the rung) whose gain from a rung to the end is averaged


def imputed_score(trial: TrialState, state: SweepState, finals: Mapping[int, float]) -> float | None:
    """What a stopped trial would likely have scored at the end: its value at the last rung it reached, plus the
    median gain the completed trials made from that rung to their final score (``finals``: trial -> score, of the
    completed ones). None when no completed trial passed that rung yet.

    A learning curve stopped early is still rising: told its value so far, the optimizer would compare a partial
    score with final ones and think the region worse than it is. The gain is measured, not assumed, and in the
    final score's own terms (a report of training return and an eval's return may differ by a constant)."""
    if not trial.rung_positions:
        return None
    k = len(trial.rung_positions) - 1
    arrived = state.rungs.get(k, ())
    position = trial.rung_positions[k]
    if position >= len(arrived) or arrived[position][0] != trial.trial:
        return None
    gains: list[float] = []
    for other, value in reversed(arrived):
        if other in finals:
            gains.append(finals[other] - value)
            if len(gains) >= LIFT_WINDOW:
                break
    return arrived[position][1] + statistics.median(gains) if gains else None
