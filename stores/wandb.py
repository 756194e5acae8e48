"""W&B as a mirror of the event log, and as the source for resuming a sweep on a machine without its log.

The mirror (:class:`WandbMirror`) follows the committed event stream and keeps one W&B run per trial:

- run id and name: the trial's run name (``<sweep>_trial_0007``); group: the sweep name; tags: the sweep name;
  job type ``trial``; config: the suggested parameters under their nested paths (``trainer.optimizer.lr`` becomes
  ``{"trainer": {"optimizer": {"lr": ...}}}``);
- summary: the seed's keys (``sweep/suggestion``, ``sweep/score``, ``sweep/cost``) plus ``sweep/status``,
  ``sweep/progress`` and the eval job's metrics at top level (``evaluator/eval_arena/score``, ...);
- history: one row when the trial completes (score, cost and the eval metrics) at step = the event's seq.

A run with the sweep's own name (job type ``sweep``) holds the sweep definition in its config and the sweep's
totals and best trial in its summary.

It never blocks and never loses: ``publish`` only keeps the latest (immutable) record of the trial an event
touched, so memory is bounded by the trials changed since the last write, not by the events. ``run`` writes in a
worker thread, retrying with exponential backoff while W&B is down. A cursor file (``<sweep_dir>/wandb_mirror.json``)
records the seq up to which everything is written, and, for runs written after it, a digest of what was last
written. At start-up the service replays to the mirror every logged event after that seq (``catch_up_from``), so a
restart writes what it missed and nothing twice.

:func:`events_from_wandb` reads a sweep's group back from the W&B API and rebuilds an event list that a fresh
local log can start from.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import structlog

from orchestrator.core import events as ev
from orchestrator.core.files import write_atomic
from orchestrator.core.jobs import run_name
from orchestrator.core.state import SweepState, TrialState, thaw
from stores.wandb_client import RemoteRun, RunHandle, WandbClient, WandbError, redact, resolve_mode

__all__ = [
    "WandbMirror",
    "events_from_wandb",
    "restore_log_from_wandb",
    "resolve_mode",
    "trial_record",
    "sweep_record",
    "unflatten",
    "flatten",
    "CURSOR_FILE",
]

CURSOR_FILE = "wandb_mirror.json"
_CURSOR_VERSION = 1


def _log() -> Any:
    """The mirror's logger, bound at call time so it follows the service's logging configuration."""
    return structlog.get_logger().bind(component="WandbMirror")


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
)


# -- the cursor -----------------------------------------------------------------------------------------------


# -- the mirror -----------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    state: SweepState
    seq: int
    trials: list[TrialState]
    sweep: bool
    done: list[int]  # trial numbers written
    sweep_done: bool = False


class WandbMirror:
    """A :class:`~orchestrator.subscribers.Subscriber` that mirrors the sweep to W&B (see the module docstring).

    ``config`` needs ``sweep_name`` and ``wandb`` (a ``WandbSettings``); a ``SweepConfig`` will do. With
    ``wandb.mode == "disabled"`` the mirror does nothing.
    """

    def __init__(
        self,
        config: Any,
        sweep_dir: str | Path,
        *,
        client: WandbClient | None = None,
        max_open_runs: int = 16,
        batch_size: int = 32,
        backoff: tuple[float, float] = (1.0, 60.0),
        poll_interval: float = 1.0,
        close_timeout: float = 60.0,
    ):
        settings = config.wandb
        self.sweep: str = config.sweep_name
        self.sweep_dir = Path(sweep_dir)
        self.mode = resolve_mode(settings)
        self.enabled = self.mode != "disabled"
        self.client = client or WandbClient(self.mode, settings.project, settings.entity, root=self.sweep_dir)
        self.destination = f"{self.mode}:{settings.entity or ''}/{settings.project}"
        self.cursor_path = self.sweep_dir / CURSOR_FILE
        self.max_open_runs = max(1, max_open_runs)
        self.batch_size = max(1, batch_size)
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.close_timeout = close_timeout

        self._cursor = self._load_cursor()
        self._state: SweepState | None = None
        self._seq = 0
        self._dirty: dict[int, TrialState] = {}  # trial number -> its latest record, until written
        self._sweep_dirty = False
        self._completed_at: dict[int, int] = {}  # trial -> seq of its TrialCompleted, until written
        self._open: OrderedDict[str, RunHandle] = OrderedDict()
        self._open_config: dict[str, str] = {}
        self._limiter = anyio.CapacityLimiter(1)
        self._io_lock = threading.Lock()  # the worker-side state: open runs and the cursor
        self._stopped = False
        self._wake: anyio.Event | None = None
        self._busy = False
        self._failures = 0
        self.errors = 0  # failed attempts so far (for tests and status displays)
        self.writes = 0  # runs written so far

    # -- Subscriber -------------------------------------------------------------------------------------------

    def publish(self, stored: ev.StoredEvent, state: SweepState) -> None:
        """Note what changed and return at once (O(1); never touches W&B or the disk)."""
        if not self.enabled:
            return
        self._state = state
        self._seq = stored.seq
        event = stored.event
        trial = _trial_of(event, state)
        if trial is not None:
            self._dirty[trial.trial] = trial
            if isinstance(event, ev.TrialCompleted):
                self._completed_at.setdefault(trial.trial, stored.seq)
        if isinstance(event, _SWEEP_EVENTS):
            self._sweep_dirty = True
        self._kick()

    def catch_up_from(self) -> int | None:
        """The seq after which this mirror needs the logged events replayed to it at start-up: everything before
        is in W&B already (None when disabled: nothing to catch up)."""
        return int(self._cursor.get("seq", 0)) if self.enabled else None

    async def run(self) -> None:
        """Write to W&B until cancelled; on cancellation finish the open runs (shielded, bounded in time)."""
        if not self.enabled:
            return
        self._wake = anyio.Event()
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    self._wake = anyio.Event()
                    with anyio.move_on_after(self.poll_interval):
                        await self._wake.wait()
                    continue
                self._busy = True
                try:
                    # Abandonable: a W&B call stuck in the network must not hold up the service's shutdown.
                    await anyio.to_thread.run_sync(
                        self._write_batch, batch, limiter=self._limiter, abandon_on_cancel=True
                    )
                except Exception as exc:  # noqa: BLE001 - W&B being down must never end the mirror
                    self._requeue(batch)
                    await self._back_off(exc)
                else:
                    if self._failures:
                        _log().info("W&B is reachable again; catching up", pending=len(self._dirty))
                    self._failures = 0
                finally:
                    self._busy = False
        finally:
            self._stopped = True
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.close_timeout) as scope:
                    await anyio.to_thread.run_sync(self._close_all, abandon_on_cancel=True)
                if scope.cancelled_caught:
                    _log().warning(
                        "W&B did not finish the open runs in time; the next start resumes them", open=len(self._open)
                    )

    # -- status -----------------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Trials waiting to be written (0 when the mirror has caught up)."""
        return len(self._dirty) + int(self._sweep_dirty) + int(self._busy)

    @property
    def mirrored_seq(self) -> int:
        """The last seq whose state W&B has fully received."""
        return int(self._cursor.get("seq", 0))

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything published so far is written; False if ``timeout`` ran out first."""
        if not self.enabled:
            return True
        with anyio.move_on_after(timeout):
            while self.pending:
                self._kick()
                await anyio.sleep(0.02)
            return True
        return False

    async def drain(self, timeout: float = 30.0) -> None:
        """What the service calls once the sweep has ended: give W&B up to ``timeout`` seconds to catch up. What is
        still unwritten then stays in the log and the cursor, and the next start writes it."""
        if not await self.flush(timeout):
            _log().warning("W&B has not caught up; the rest is written on the next start", pending=len(self._dirty))

    # -- internals (loop side) --------------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._wake is not None:
            try:
                self._wake.set()
            except RuntimeError:  # called from outside the event loop's thread: the poll picks it up
                pass

    def _take_batch(self) -> _Batch | None:
        state = self._state
        if state is None:
            return None
        if not self._dirty and not self._sweep_dirty:
            return None
        trials = [self._dirty.pop(n) for n in sorted(self._dirty)[: self.batch_size]]
        sweep = self._sweep_dirty
        self._sweep_dirty = False
        return _Batch(state, self._seq, trials, sweep, done=[])

    def _requeue(self, batch: _Batch) -> None:
        for trial in batch.trials:
            if trial.trial not in batch.done:
                self._dirty.setdefault(trial.trial, trial)  # a newer record may have come in meanwhile
        if batch.sweep and not batch.sweep_done:
            self._sweep_dirty = True

    async def _back_off(self, exc: BaseException) -> None:
        self._failures += 1
        self.errors += 1
        base, cap = self.backoff
        delay = min(cap, base * 2 ** (self._failures - 1)) * random.uniform(0.8, 1.2)
        message = redact(str(exc)) if isinstance(exc, WandbError) else redact(f"{type(exc).__name__}: {exc}")
        log = _log().warning if self._failures == 1 or self._failures % 10 == 0 else _log().debug
        log(
            "W&B write failed; the sweep goes on and the mirror retries",
            error=message,
            attempt=self._failures,
            retry_in=round(delay, 2),
            pending=len(self._dirty),
        )
        await anyio.sleep(delay)

    # -- internals (worker thread) ----------------------------------------------------------------------------

    def _load_cursor(self) -> dict[str, Any]:
        fresh = {"version": _CURSOR_VERSION, "destination": self.destination, "seq": 0, "runs": {}}
        try:
            data = json.loads(self.cursor_path.read_text())
        except FileNotFoundError:
            return fresh
        except ValueError:
            _log().warning(
                "unreadable W&B mirror cursor; rewriting every run (writes are idempotent)", path=str(self.cursor_path)
            )
            return fresh
        if data.get("version") != _CURSOR_VERSION or data.get("destination") != self.destination:
            return fresh  # another destination (offline -> online, another project): write everything there
        data.setdefault("runs", {})
        return data

    def _save_cursor(self) -> None:
        write_atomic(self.cursor_path, json.dumps(self._cursor, separators=(",", ":"), sort_keys=True), durable=True)

    def _write_batch(self, batch: _Batch) -> None:
        with self._io_lock:
            try:
                self._write_batch_locked(batch)
            finally:
                if self._stopped:  # abandoned at shutdown and only now back from W&B: tidy up after ourselves
                    self._close_all_locked()

    def _write_batch_locked(self, batch: _Batch) -> None:
        state = batch.state
        changed = False
        try:
            for trial in batch.trials:
                if self._stopped:
                    return  # shutting down: the rest waits for the next start
                changed |= self._write_run(trial_record(state, trial), batch, trial.trial)
                batch.done.append(trial.trial)
            if batch.sweep:
                record = sweep_record(state)
                if record is not None:
                    changed |= self._write_run(record, batch, None)
                batch.sweep_done = True
            if not self._dirty and not self._sweep_dirty and self._cursor.get("seq", 0) < batch.seq:
                self._advance(batch.seq)
                changed = True
        finally:
            if changed:
                self._save_cursor()

    def _advance(self, seq: int) -> None:
        """Everything up to ``seq`` is in W&B. A finished run written by then can never change again (a restart
        replays only the events after ``seq``), so its entry goes: the cursor stays as small as the open runs."""
        self._cursor["seq"] = seq
        runs = self._cursor["runs"]
        for run_id in [r for r, e in runs.items() if e.get("finished") and e.get("seq", seq + 1) <= seq]:
            del runs[run_id]

    def _write_run(self, record: RunRecord, batch: _Batch, trial: int | None) -> bool:
        runs = self._cursor["runs"]
        entry = runs.get(record.run_id)
        digest = record.digest()
        if entry is not None and entry.get("digest") == digest:
            return False
        entry = dict(entry or {})
        handle = self._open.get(record.run_id)
        if handle is None:
            self._evict()
            handle = self.client.open(
                record.run_id,
                group=self.sweep,
                tags=[self.sweep],
                config=record.config,
                job_type=record.job_type,
            )
            self._open[record.run_id] = handle
            self._open_config[record.run_id] = record.config_digest()
        elif self._open_config.get(record.run_id) != record.config_digest():
            self.client.update_config(handle, record.config)
            self._open_config[record.run_id] = record.config_digest()
        self._open.move_to_end(record.run_id)
        self.client.update_summary(handle, record.summary)
        if record.metrics is not None and entry.get("step") is None:
            step = self._completed_at.get(trial, batch.seq) if trial is not None else batch.seq
            self.client.log(handle, record.metrics, step=step)
            entry["step"] = step
            # From here on the row is written: remember that before anything else can fail.
            runs[record.run_id] = entry
            self._save_cursor()
        if record.exit_code is not None:
            self._close(record.run_id, record.exit_code)
        entry.update(seq=batch.seq, digest=digest, finished=record.exit_code is not None)
        runs[record.run_id] = entry
        if trial is not None and entry.get("step") is not None:
            self._completed_at.pop(trial, None)
        self.writes += 1
        return True

    def _close(self, run_id: str, exit_code: int) -> None:
        handle = self._open.pop(run_id, None)
        self._open_config.pop(run_id, None)
        if handle is not None:
            self.client.finish(handle, exit_code)

    def _evict(self) -> None:
        while len(self._open) >= self.max_open_runs:
            run_id = next(iter(self._open))
            self._close(run_id, 0)

    def _close_all(self) -> None:
        if not self._io_lock.acquire(timeout=self.close_timeout):
            return  # a write is still stuck in W&B: it closes the runs when it returns (see _write_batch)
        try:
            self._close_all_locked()
        finally:
            self._io_lock.release()

    def _close_all_locked(self) -> None:
        for run_id in list(self._open):
            try:
                self._close(run_id, 0)
            except Exception as exc:  # noqa: BLE001
                _log().warning("could not finish a W&B run at shutdown", run=run_id, error=redact(str(exc)))
        try:
            self._save_cursor()
        except OSError as exc:
            _log().warning("could not save the W&B mirror cursor", error=redact(str(exc)))


# -- resume from W&B ------------------------------------------------------------------------------------------

_UNFINISHED = ("pending", "training", "training_done", "evaluating")


def _trial_number(sweep: str, run: RemoteRun) -> int | None:
    value = run.summary.get("sweep/trial")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    m = re.fullmatch(re.escape(sweep) + r"_trial_(\d+)", run.id)
    return int(m.group(1)) if m else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _has_checkpoint(train_dir: Path, run: str) -> bool:
    path = train_dir / run / "checkpoints"
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def _eval_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in summary.items()
        if not k.startswith("_") and not k.startswith("sweep/") and not isinstance(v, dict)
    }


def events_from_wandb(
    settings: Any,
    sweep: str,
    train_dir: str | Path = "train_dir",
    *,
    client: WandbClient | None = None,
) -> list[ev.Event]:
    """Rebuild a sweep's event list from its W&B group, for a machine that has no local log.

    Returns ``[]`` when W&B has no run in the group. Otherwise: ``SweepCreated`` (definition from the sweep-level
    run's config; ``{}`` if that run is missing), then per trial in order ``TrialSuggested`` and its outcome:

    - completed (``sweep/score`` in the summary): ``TrialCompleted`` with score, cost and the eval metrics;
    - failed (``sweep/status`` failed, or nothing but a crashed/failed W&B state and no checkpoint): ``TrialFailed``;
    - unfinished (pending, training, evaluating; W&B shows it running, crashed or finished early): if
      ``train_dir/<run>/checkpoints`` holds a checkpoint, an exited train job (``JobRequested`` and
      ``JobExited(exit_code=0)``) so the scheduler evaluates it again; else ``TrialFailed``;
    - a trial number with no run at all (never mirrored): ``TrialFailed`` with empty params, so numbering stays
      gap-free;

    and ``SweepFinished`` if the sweep run says the sweep finished. Raises :class:`WandbError` (redacted) when W&B
    cannot be read.
    """
    train_dir = Path(train_dir)
    client = client or WandbClient("online", settings.project, getattr(settings, "entity", None), root=None)
    runs = client.group_runs(sweep)
    if not runs:
        return []
    sweep_run = next((r for r in runs if r.job_type == "sweep" or r.summary.get("sweep/kind") == "sweep"), None)
    if sweep_run is None:
        sweep_run = next((r for r in runs if r.id == sweep), None)
    trials: dict[int, RemoteRun] = {}
    for run in runs:
        if run is sweep_run:
            continue
        number = _trial_number(sweep, run)
        if number is not None and number not in trials:
            trials[number] = run

    now = time.time()
    definition = dict(sweep_run.config) if sweep_run is not None else {}
    created = _number(sweep_run.summary.get("sweep/created_at")) if sweep_run is not None else None
    out: list[ev.Event] = [ev.SweepCreated(sweep=sweep, config=definition, ts=created or now)]
    last = max(trials, default=0)
    for number in range(1, last + 1):
        trial_run = trials.get(number)
        if trial_run is None:
            name = run_name(sweep, number)
            out.append(ev.TrialSuggested(trial=number, run=name, params={}, info={"restored_from": "wandb"}))
            out.append(ev.TrialFailed(trial=number, reason="no W&B run for this trial (never mirrored)"))
            continue
        out.extend(_trial_events(number, trial_run, train_dir, now))
    if sweep_run is not None and sweep_run.summary.get("sweep/finished") is True:
        best = sweep_run.summary.get("sweep/best_trial")
        out.append(ev.SweepFinished(best_trial=int(best) if isinstance(best, (int, float)) else None))
    return out


def restore_log_from_wandb(
    settings: Any,
    sweep: str,
    store: Any,
    train_dir: str | Path = "train_dir",
    *,
    client: WandbClient | None = None,
) -> list[ev.StoredEvent]:
    """Fill an empty event log from W&B: ``events_from_wandb`` appended to ``store`` (a ``Store``).

    Does nothing and returns ``[]`` if the log already has events (the local log is the truth) or W&B has no run
    in the group. Raises :class:`WandbError` (redacted) when W&B cannot be read.
    """
    if store.last_seq() > 0:
        return []
    events = events_from_wandb(settings, sweep, train_dir, client=client)
    if not events:
        return []
    stored = store.append(events)
    _log().info(
        "rebuilt the sweep from W&B",
        sweep=sweep,
        events=len(stored),
        trials=sum(isinstance(e, ev.TrialSuggested) for e in events),
    )
    return stored


def _trial_events(number: int, run: RemoteRun, train_dir: Path, now: float) -> Iterable[ev.Event]:
    s = run.summary
    params = s.get("sweep/suggestion")
    if not isinstance(params, dict):
        params = flatten(run.config)
    info = dict(s.get("sweep/info") or {}) if isinstance(s.get("sweep/info"), dict) else {}
    info.update(restored_from="wandb", wandb_state=run.state)
    suggested = _number(s.get("sweep/suggested_at")) or now
    yield ev.TrialSuggested(trial=number, run=run.id, params=params, info=info, ts=suggested)

    status = s.get("sweep/status")
    score = _number(s.get("sweep/score"))
    ended = _number(s.get("sweep/ended_at")) or now
    if status != "failed" and score is not None:
        cost = _number(s.get("sweep/cost"))
        if cost is None:
            cost = _number(s.get("sweep/train_seconds")) or _number(s.get("_runtime")) or 0.0
        yield ev.TrialCompleted(trial=number, score=score, cost=cost, metrics=_eval_metrics(s), ts=ended)
        return
    if status == "failed":
        yield ev.TrialFailed(trial=number, reason=str(s.get("sweep/reason") or "failed (from W&B)"), ts=ended)
        return
    # Unfinished here: pending, training, evaluating, or a run W&B shows crashed/failed/running with no result.
    if _has_checkpoint(train_dir, run.id):
        attempts = s.get("sweep/attempts")
        attempt = int(attempts.get("train", 1)) if isinstance(attempts, dict) else 1
        key = f"{run.id}.train.{max(1, attempt)}"
        duration = _number(s.get("sweep/train_seconds")) or _number(s.get("_runtime")) or 0.0
        yield ev.JobRequested(
            key=key, trial=number, kind="train", attempt=max(1, attempt), argv=[], dispatcher="restored", ts=suggested
        )
        yield ev.JobExited(key=key, exit_code=0, duration=duration, ts=now)
        return
    where = train_dir / run.id / "checkpoints"
    yield ev.TrialFailed(
        trial=number,
        reason=f"W&B shows the run {run.state} with status {status or 'unknown'}, and no checkpoint at {where}",
        ts=now,
    )
