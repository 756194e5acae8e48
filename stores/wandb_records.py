"""What the W&B mirror writes for a sweep: pure functions of the state (one RunRecord per trial, one for the sweep)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.core import events as ev
from orchestrator.core.state import SweepState, TrialState, thaw

# -- what is written: pure functions of the state -------------------------------------------------------------


def unflatten(params: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}`` (a path that is also a prefix keeps its value
    under ``_value`` so nothing is lost)."""
    tree: dict[str, Any] = {}
    for path in sorted(params):
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else {"_value": child}
                node[part] = child
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            node[leaf]["_value"] = params[path]
        else:
            node[leaf] = params[path]
    return tree


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`unflatten`."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key == "_value" and prefix:
            out[prefix] = value
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def _json_safe(value: Any) -> Any:
    """Plain JSON data (W&B stores summary and config as JSON); non-finite floats become strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class RunRecord:
    """Everything one W&B run should hold for a given state."""

    run_id: str
    job_type: Literal["trial", "sweep"]
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: dict[str, Any] | None = None  # the completion row (trials only)
    exit_code: int | None = None  # set when the run is done for good

    def digest(self) -> str:
        body = json.dumps([self.config, self.summary, self.metrics, self.exit_code], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:24]

    def config_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _metric_name(state: SweepState) -> str | None:
    protein = state.config.get("protein_config") if state.config else None
    return protein.get("metric") if protein is not None else None


def trial_record(state: SweepState, trial: TrialState) -> RunRecord:
    """The W&B run of one trial (``state`` gives the sweep's definition)."""
    params = thaw(trial.params)
    summary: dict[str, Any] = {
        "sweep/trial": trial.trial,
        "sweep/suggestion": params,
        "sweep/status": trial.status,
        "sweep/suggested_at": trial.suggested_at,
    }
    if trial.info:
        summary["sweep/info"] = thaw(trial.info)
    trains = trial.jobs_of("train")
    evals = trial.jobs_of("eval")
    train = trains[-1] if trains else None
    progress = 0.0
    if train is not None:
        if train.succeeded:
            progress = 1.0
            summary["sweep/train_seconds"] = train.duration
        elif train.step is not None and train.total:
            progress = max(0.0, min(1.0, train.step / train.total))
        if train.step is not None:
            summary["sweep/steps"] = train.step
        if train.total is not None:
            summary["sweep/total_steps"] = train.total
        if train.sps is not None:
            summary["sweep/sps"] = train.sps
    if trial.status in ("training_done", "evaluating", "completed"):
        progress = 1.0
    summary["sweep/progress"] = progress
    if trial.reported_step is not None:  # the learning curve's latest point (SWEEP_REPORT)
        summary["sweep/report_step"] = trial.reported_step
        summary["sweep/best_reported"] = trial.best_reported
    summary["sweep/attempts"] = {"train": len(trains), "eval": len(evals)}
    metrics_row: dict[str, Any] | None = None
    exit_code: int | None = None
    if trial.status == "completed":
        metrics = thaw(trial.metrics) or {}
        summary["sweep/score"] = trial.score
        summary["sweep/cost"] = trial.cost
        summary["sweep/ended_at"] = trial.ended_at
        row = {k: v for k, v in flatten(metrics).items() if not k.startswith("_")}
        metric = _metric_name(state)
        if metric and metric not in row:
            row[metric] = trial.score
        summary.update(row)
        metrics_row = {**row, "sweep/score": trial.score, "sweep/cost": trial.cost}
        exit_code = 0
    elif trial.status == "stopped":
        summary.update({"sweep/score": trial.score, "sweep/cost": trial.cost, "sweep/stopped_at_step": trial.stop_step})
        summary["sweep/stop_reason"] = trial.stop_reason
        summary["sweep/ended_at"] = trial.ended_at
        exit_code = 0
    elif trial.status == "failed":
        summary["sweep/reason"] = trial.reason
        summary["sweep/ended_at"] = trial.ended_at
        exit_code = 1
    return RunRecord(
        run_id=trial.run,
        job_type="trial",
        config=_json_safe(unflatten(params)),
        summary=_json_safe(summary),
        metrics=_json_safe(metrics_row) if metrics_row is not None else None,
        exit_code=exit_code,
    )


def sweep_record(state: SweepState) -> RunRecord | None:
    """The sweep-level run: the definition (config) and the totals (summary)."""
    if state.sweep is None:
        return None
    best = state.best
    summary: dict[str, Any] = {
        "sweep/kind": "sweep",
        "sweep/name": state.sweep,
        "sweep/status": "finished" if state.finished else "running",
        "sweep/finished": state.finished,
        "sweep/trials": state.numbered,
        "sweep/completed": state.completed,
        "sweep/failed": state.failed,
        "sweep/stopped": state.early_stopped,
        "sweep/active": len(state.open_trials),
        "sweep/resumes": state.resumes,
        "sweep/created_at": state.created_at,
        "sweep/best_trial": state.best_trial,
    }
    if best is not None:
        summary["sweep/best_run"] = best.run
        summary["sweep/best_score"] = best.score
    return RunRecord(
        run_id=state.sweep,
        job_type="sweep",
        config=_json_safe(thaw(state.config)),
        summary=_json_safe(summary),
        exit_code=0 if state.finished else None,
    )


def _trial_of(event: Any, state: SweepState) -> TrialState | None:
    """The trial ``event`` touched, as it stands in ``state`` (the state just after the event)."""
    number = getattr(event, "trial", None)
    if not isinstance(number, int):
        key = getattr(event, "key", None)
        number = state.job_trials.get(key) if key is not None else None
    return state.trial(number) if isinstance(number, int) else None


_SWEEP_EVENTS = (
    ev.SweepCreated,
    ev.SweepResumed,
    ev.SweepFinished,
    ev.TrialSuggested,
    ev.TrialCompleted,
    ev.TrialFailed,
    ev.TrialStopped,
)
