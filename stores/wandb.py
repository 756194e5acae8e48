"""W&B as a mirror of the event log, and as the source for resuming a sweep on a machine without its log.

The mirror (:class:`WandbMirror`) follows the committed event stream and keeps one W&B run per trial:

- run id and name: the trial's run name (``<sweep>_trial_0007``); group: the sweep name; tags: the sweep name;
  job type ``trial``; config: the suggested parameters under their nested paths (``trainer.optimizer.lr`` becomes
  ``{"trainer": {"optimizer": {"lr": ...}}}``);
- summary: the seed's keys (``sweep/suggestion``, ``sweep/score``, ``sweep/cost``) plus ``sweep/status``,
  ``sweep/progress`` and the eval job's metrics at top level (``evaluator/eval_arena/score``, ...);
- history: one row when the trial completes (score, cost and the eval metrics) at step = the event's seq, and
  one row per intermediate report (``SWEEP_REPORT``, as logged: throttled) with its training step as
  ``sweep/report_step`` and its values, also at step = the event's seq (W&B's step must only increase).

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

By concern: ``stores.wandb_client`` (the SDK and API behind one small client), ``stores.wandb_records`` (what is
written, pure functions of the state), this module (the mirror and its cursor), ``stores.wandb_restore`` (resume
from W&B). The public names are all importable from here.
"""

from __future__ import annotations

import json
import random
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from orchestrator.core import events as ev
from orchestrator.core.files import write_atomic
from orchestrator.core.state import SweepState, TrialState
from orchestrator.core.subscriber import Subscriber
from stores.wandb_client import RunHandle, WandbClient, WandbError, redact, resolve_mode
from stores.wandb_records import (
    _SWEEP_EVENTS,
    RunRecord,
    _json_safe,
    _trial_of,
    flatten,
    sweep_record,
    trial_record,
    unflatten,
)
from stores.wandb_restore import events_from_wandb, restore_log_from_wandb

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


class WandbMirror(Subscriber):
    """A :class:`~orchestrator.core.subscriber.Subscriber` that mirrors the sweep to W&B (see the module docstring).

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
        self._reports: dict[int, deque[tuple[int, dict[str, Any]]]] = {}  # trial -> (seq, history row), until written
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
            elif isinstance(event, ev.JobReported):
                row = {**flatten(event.values), "sweep/report_step": event.step}
                self._reports.setdefault(trial.trial, deque()).append((stored.seq, row))
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
        pending = self._reports.get(trial) if trial is not None else None
        while pending:
            seq, row = pending[0]
            if seq > entry.get("report_seq", 0):  # not already written before a restart
                self.client.log(handle, _json_safe(row), step=seq)
                entry["report_seq"] = seq
            pending.popleft()
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
