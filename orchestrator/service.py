"""The sweep service: one anyio task group, one event queue, one reducer.

Watchers and the optimizer put events on the queue; the main loop appends them to the store (durable first),
folds them into state, tells subscribers, then asks the scheduler what to do next and carries it out. Every
intent (a trial, a job request) is in the log before its side effect, and every side effect is keyed, so the
service can die at any instant and the same command picks up where the log stands.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from dispatchers.base import Router
from optimizers.base import Observation, ObservationLog, Optimizer, Suggestion
from optimizers.random_search import RandomSearch
from orchestrator.core import events as ev
from orchestrator.core.config import SweepConfig
from orchestrator.core.early_stopping import imputed_score, stop_requested_jobs
from orchestrator.core.jobs import Exited, JobHandle, JobSpec, Output, Progress, Report, Started, run_name, run_prefix
from orchestrator.core.reducer import reduce
from orchestrator.core.scheduler import make_scheduler
from orchestrator.core.state import JobState, SweepState, TrialState, thaw
from orchestrator.core.subscriber import Subscriber
from orchestrator.logs import get_logger
from orchestrator.render import short
from stores.base import Store, StoreError, disk_full

PROGRESS_EVERY_SECONDS = 1.0
# A stop's cancel that the dispatcher fails: tried again after 1, 2, 4, ... s (at most 60 s apart), 8 times in all.
CANCEL_ATTEMPTS = 8
CANCEL_RETRY_FIRST_DELAY = 1.0
CANCEL_RETRY_MAX_DELAY = 60.0
# Decisions folded ahead into one transaction, at most (each round's events change what the next decides).
_MAX_DECISION_ROUNDS = 100
_GATHER_ROUNDS = 4  # event-loop turns the loop waits for more events while they keep coming


@dataclass(frozen=True)
class _Suggested:
    """Internal message: the optimizer's answer, numbered by the main loop when it arrives."""

    suggestions: Sequence[Suggestion]


class SweepService:
    def __init__(
        self,
        config: SweepConfig,
        store: Store,
        dispatcher: Router,
        optimizer: Optimizer,
        subscribers: Sequence[Subscriber] = (),
        background: Sequence[Callable[[SweepService], Coroutine[Any, Any, None]]] = (),
    ):
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.optimizer = optimizer
        self.subscribers = list(subscribers)
        self.background = list(background)  # e.g. the HTTP stream server; cancelled when the sweep ends
        self.scheduler = make_scheduler(config)
        self.state = SweepState()
        self.last_seq = 0
        self.log = get_logger("SweepOrchestrator")
        self._send, self._recv = anyio.create_memory_object_stream[Any](max_buffer_size=10_000)
        self._store_limiter = anyio.CapacityLimiter(1)
        self._optimizer_limiter = anyio.CapacityLimiter(1)
        self._suggesting = False
        self._watching: set[str] = set()
        self._handles: dict[str, JobHandle] = {}  # of the jobs being watched, for a stop decision to cancel
        self._cancelling: set[str] = set()
        self._tg: TaskGroup | None = None
        self._route = {kind: dispatcher.route(kind) for kind in ("train", "eval")}
        self._observations = ObservationLog()  # rebuilt by the replay at the start of ``run``
        self._finals: dict[int, float] = {}  # completed trials that reached a rung: their scores

    # -- life cycle ------------------------------------------------------------------------------------------
    async def run(self) -> SweepState:
        """Run (or resume) the sweep to its end; returns the final state."""
        owner = f"pid {os.getpid()} on {socket.gethostname()}"
        await anyio.to_thread.run_sync(self.store.acquire_lease, owner)
        try:
            await self._replay()
            self._refuse_lost_log()
            with _store_errors_alone():
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    for sub in self.subscribers:
                        tg.start_soon(sub.run)
                    for task in self.background:
                        tg.start_soon(task, self)
                    await self._open()
                    self._reattach()
                    await self._main_loop()
                    await self._drain_subscribers()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.dispatcher.aclose()
                # the whole log into one file, for a copy
                await anyio.to_thread.run_sync(self.store.checkpoint, limiter=self._store_limiter)
                await anyio.to_thread.run_sync(self.store.release_lease)
        return self.state

    def _refuse_lost_log(self) -> None:
        """An empty log beside the job directories of earlier trials means the log was lost (a missing -wal file,
        a deleted events.db): starting afresh would run new trials over them, so refuse and say so."""
        if self.state.sweep is not None:
            return
        prefix = run_prefix(self.config.sweep_name)
        try:
            runs = sorted(p.name for p in self.config.sweep_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))
        except OSError:
            return
        if runs:
            raise StoreError(
                f"the event log of sweep {self.config.sweep_name!r} is empty, but {len(runs)} job director"
                f"{'y' if len(runs) == 1 else 'ies'} of it exist "
                f"({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''}"
                f" in {self.config.sweep_dir}): its log was lost (events.db replaced or its -wal file deleted). "
                "Restore events.db (with its events.db-wal, if any) from where it was copied, or move those "
                "directories away to start the sweep afresh.",
                "lost",
            )

    async def _replay(self) -> None:
        # Every ended trial, for the optimizer (the state keeps only recent ones); a count if that is all it reads.
        self._observations = ObservationLog(count_only=not self.optimizer.reads_observations)
        self._finals = {}

        def fold_log() -> tuple[SweepState, int]:
            # Replay builds a large, long-lived state in one go, and the cyclic GC would scan it again and again
            # as it grows (more than doubling the time to replay 100,000 events) without finding anything to
            # free: it is paused meanwhile, and what replay built is then left out of later collections.
            paused = gc.isenabled()
            gc.disable()
            try:
                state, last = SweepState(), 0
                catching_up = self._catching_up()
                for stored in self.store.read(0):
                    state, last = self._fold(state, stored.event), stored.seq
                    for sub, after in catching_up:
                        if stored.seq > after:
                            sub.publish(stored, state)
            finally:
                if paused:
                    gc.enable()
            gc.freeze()
            return state, last

        self.state, self.last_seq = await anyio.to_thread.run_sync(fold_log, limiter=self._store_limiter)

    def _catching_up(self) -> list[tuple[Subscriber, int]]:
        """Subscribers that want the logged events after their own cursor (see ``orchestrator.core.subscriber``)."""
        out = []
        for sub in self.subscribers:
            after = sub.catch_up_from()
            if after is not None:
                out.append((sub, after))
        return out

    async def _open(self) -> None:
        name = self.config.sweep_name
        if self.state.sweep is None:
            await self._commit([ev.SweepCreated(sweep=name, config=self.config.public_dict())])
        else:
            await self._commit(
                [ev.SweepResumed(sweep=name, owner=f"pid {os.getpid()}", config=self.config.public_dict())]
            )

    def _reattach(self) -> None:
        """Jobs the log says are in flight: find them again (requested) or go back to watching them."""
        for job in self.state.active_jobs():
            self._start_job(job, resume=True)

    async def _drain_subscribers(self) -> None:
        with anyio.move_on_after(30):
            for sub in self.subscribers:
                await sub.drain()

    # -- the loop ------------------------------------------------------------------------------------------
    async def _main_loop(self) -> None:
        incoming: list[ev.Event] = []
        while True:
            # What arrived and what the scheduler decides on it go to the store in one transaction (one fsync);
            # nothing of it takes effect before that transaction is durable.
            events, states, decision = self._plan(incoming)
            if decision.suggest > 0 and not self._suggesting and not decision.events:
                # The optimizer is pure computation: it may work on the planned state while that is being made
                # durable. Its answer is numbered and logged only after this commit (see _to_events).
                self._suggesting = True
                self._spawn(self._suggest, decision.suggest, states[-1] if states else self.state)
            await self._commit(events, states)
            incoming = []
            if decision.events:  # more decisions than one transaction holds: carry on before waiting
                continue
            if self.state.finished or self.state.stopped:
                return  # the console subscriber prints the summary as the subscribers are drained
            timeout = math.inf if decision.wake_at is None else max(0.0, decision.wake_at - time.time())
            batch: list[Any] = []
            with anyio.move_on_after(timeout):
                batch.append(await self._recv.receive())
            # Take everything already queued, and what tasks that are ready to run put there next (a job's submit,
            # start and exit often come in quick succession): one store transaction, one fsync, for the lot.
            for _ in range(_GATHER_ROUNDS):
                before = len(batch)
                while True:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except anyio.WouldBlock:
                        break
                if len(batch) == before:
                    break
                await anyio.lowlevel.checkpoint()
            incoming = self._to_events(batch)

    def _plan(self, incoming: list[ev.Event]) -> tuple[list[ev.Event], list[SweepState], Any]:
        """Fold ``incoming`` into a tentative state, then the scheduler's decisions on it until it has none left.
        Pure: the states are only candidates until ``_commit`` has made their events durable."""
        events: list[ev.Event] = []
        states: list[SweepState] = []
        state = self.state
        for event in incoming:
            state = self._fold(state, event)
            events.append(event)
            states.append(state)
        for _ in range(_MAX_DECISION_ROUNDS):
            decision = self.scheduler.decide(state, time.time(), self._route)
            if not decision.events:
                break
            for event in decision.events:
                state = self._fold(state, event)
                events.append(event)
                states.append(state)
        return events, states, decision

    def _fold(self, state: SweepState, event: ev.Event) -> SweepState:
        """``reduce``, plus what the optimizer learns from a trial that this event ended. Every event the service
        folds (replayed, planned or its own) comes through here, and every plan is committed before the next."""
        after = reduce(state, event)
        if after.ended > state.ended:
            trial = after.recent[-1]
            self._observations.append(_observation(trial, after, self._finals))
            if trial.status == "completed" and trial.score is not None and trial.rung_positions:
                self._finals[trial.trial] = trial.score  # what a stopped trial's score is imputed from
        return after

    def _to_events(self, batch: list[Any]) -> list[ev.Event]:
        out: list[ev.Event] = []
        for item in batch:
            if isinstance(item, _Suggested):
                self._suggesting = False
                out += self._number(item.suggestions, planned=sum(isinstance(e, ev.TrialSuggested) for e in out))
            else:
                out.append(item)
        return out

    def _number(self, suggestions: Sequence[Suggestion], planned: int) -> list[ev.Event]:
        out: list[ev.Event] = []
        for s in suggestions:
            trial = self.state.next_trial + planned + len(out)
            if trial > self.config.max_trials:
                break
            run = run_name(self.config.sweep_name, trial)
            out.append(ev.TrialSuggested(trial=trial, run=run, params=s.params, info=s.info))
        return out

    async def _commit(self, events: Sequence[ev.Event], states: Sequence[SweepState] | None = None) -> None:
        """Append durably, then fold (``states``: the fold, already computed), tell subscribers, and only then
        start side effects."""
        if not events:
            return
        if states is None:
            states, state = [], self.state
            for event in events:
                state = self._fold(state, event)
                states.append(state)
        stored = await anyio.to_thread.run_sync(self.store.append, list(events), limiter=self._store_limiter)
        for item, state in zip(stored, states):
            self.state = state
            self.last_seq = item.seq
            for sub in self.subscribers:
                sub.publish(item, self.state)
            if isinstance(item.event, ev.JobRequested):
                job = self.state.job(item.event.key)
                if job is not None and job.status == "requested":
                    self._start_job(job, resume=False)
        self._enforce_stops()

    def _enforce_stops(self) -> None:
        """Cancel the train jobs of trials the log says to stop (the decision is durable by now). Level-triggered:
        after a restart the same check cancels a job whose cancel the crash cut short."""
        for trial, key in stop_requested_jobs(self.state):
            handle = self._handles.get(key)
            if handle is None or key in self._cancelling:
                continue  # not submitted yet: checked again when its handle is known
            self._cancelling.add(key)
            self._spawn(self._cancel_stopped, self._spec(trial.job(key)), handle)  # type: ignore[arg-type]

    async def _cancel_stopped(self, spec: JobSpec, handle: JobHandle) -> None:
        """Cancel a stopped trial's train job; a cancel the dispatcher fails is tried again with backoff (the job
        would otherwise train to its end), a bounded number of times, then left to the next restart."""
        self.log.info(f"stopping {spec.key} early")
        delay = CANCEL_RETRY_FIRST_DELAY
        for attempt in range(1, CANCEL_ATTEMPTS + 1):
            try:
                await self.dispatcher.cancel(spec, handle)
                return
            except Exception as exc:  # noqa: BLE001 - a broken dispatcher must not take the service down
                if attempt == CANCEL_ATTEMPTS:
                    self.log.error(
                        f"could not stop {spec.key} after {attempt} attempts ({exc}); "
                        "the next serve of this sweep tries again"
                    )
                    return
                self.log.warning(f"could not stop {spec.key} (attempt {attempt}): {exc}; retrying in {delay:g} s")
            await anyio.sleep(delay)
            if spec.key not in self._handles:
                return  # the job ended meanwhile: nothing left to stop
            delay = min(delay * 2, CANCEL_RETRY_MAX_DELAY)

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    # -- effects -------------------------------------------------------------------------------------------
    def _spec(self, job: JobState) -> JobSpec:
        return job_spec(self.config, self.state.open_trials[job.trial], job)

    def _start_job(self, job: JobState, resume: bool) -> None:
        if job.key in self._watching:
            return
        self._watching.add(job.key)
        handle = JobHandle(job.key, job.dispatcher, thaw(job.handle)) if job.status != "requested" else None
        self._spawn(self._run_job, job, handle, resume)

    async def _run_job(self, job: JobState, handle: JobHandle | None, resume: bool) -> None:
        spec = self._spec(job)
        try:
            if handle is None:
                handle = await self._submit(spec, resume)
                if handle is None:
                    return
            # A dispatcher that neither reports nor gives up this long after the job's own limit is presumed hung.
            assert spec.timeout is not None  # job_spec always sets it (config.timeout)
            await self._watch(spec, handle, deadline=job.requested_at + spec.timeout + self.config.watch_grace)
        finally:
            self._watching.discard(job.key)

    async def _submit(self, spec: JobSpec, resume: bool) -> JobHandle | None:
        try:
            # After a crash the request may or may not have reached the dispatcher: ask before submitting.
            handle = await self.dispatcher.find(spec) if resume else None
            reattached = handle is not None
            if handle is None:
                handle = await self.dispatcher.submit(spec)
        except Exception as exc:  # noqa: BLE001 - a broken dispatcher fails the job, not the service
            await self._send.send(
                ev.JobExited(
                    key=spec.key, exit_code=None, error=f"dispatcher {spec.dispatcher!r} could not submit: {exc}"
                )
            )
            return None
        await self._send.send(ev.JobSubmitted(key=spec.key, handle=handle.data, reattached=reattached))
        return handle

    async def _watch(self, spec: JobSpec, handle: JobHandle, deadline: float) -> None:
        self._handles[spec.key] = handle
        try:
            await self._watch_updates(spec, handle, deadline)
        finally:
            self._handles.pop(spec.key, None)
            self._cancelling.discard(spec.key)

    async def _watch_updates(self, spec: JobSpec, handle: JobHandle, deadline: float) -> None:
        echo = get_logger(short(spec.run))
        if self.state.job_trials.get(spec.key) is not None:
            self._enforce_stops()  # a stop decided before this job's handle was known
        # Progress is throttled here, the one place for every dispatcher: at most one JobProgress a second per
        # job, and the latest one held back is logged before anything else the job reports, so none is lost.
        last_progress = -math.inf
        # Intermediate reports (SWEEP_REPORT) are throttled the same way, on their own clock.
        held: Progress | None = None
        last_report = -math.inf
        held_report: Report | None = None
        exited: ev.JobExited | None = None

        async def log_progress(force: bool) -> None:
            nonlocal held, last_progress, held_report, last_report
            if held is not None and (force or time.monotonic() - last_progress >= PROGRESS_EVERY_SECONDS):
                last_progress = time.monotonic()
                update, held = held, None
                await self._send.send(
                    ev.JobProgress(key=spec.key, step=update.step, total=update.total, sps=update.sps)
                )
            if held_report is not None and (force or time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS):
                last_report = time.monotonic()
                report, held_report = held_report, None
                await self._send.send(ev.JobReported(key=spec.key, step=report.step, values=report.values))

        try:
            with anyio.fail_after(max(1.0, deadline - time.time())):
                async for update in self.dispatcher.watch(spec, handle):
                    if isinstance(update, Progress):
                        held = update
                        await log_progress(force=False)
                    elif isinstance(update, Report):
                        held_report = update
                        await log_progress(force=False)
                    else:
                        await log_progress(force=not isinstance(update, Output))
                    if isinstance(update, Output):
                        if spec.capture_output:
                            echo.info(update.line)
                    elif isinstance(update, Started):
                        await self._send.send(ev.JobStarted(key=spec.key))
                    elif isinstance(update, Exited):
                        exited = ev.JobExited(
                            key=spec.key,
                            exit_code=update.exit_code,
                            result=_as_logged(update.result),
                            duration=update.duration,
                            error=update.error,
                        )
                        break
            if exited is None:
                exited = ev.JobExited(
                    key=spec.key, exit_code=None, error="the dispatcher stopped watching without an exit status"
                )
        except TimeoutError:
            with anyio.move_on_after(15, shield=True):
                await self._cancel_quietly(spec, handle)
            exited = ev.JobExited(
                key=spec.key,
                exit_code=None,
                error=f"dispatcher {spec.dispatcher!r} reported no exit within job_timeout {spec.timeout:g} s + "
                f"watch_grace {self.config.watch_grace:g} s of the job's request: presumed hung, cancelled",
            )
        except Exception as exc:  # noqa: BLE001 - a broken dispatcher fails the job, not the service
            exited = ev.JobExited(
                key=spec.key, exit_code=None, error=f"dispatcher {spec.dispatcher!r} failed while watching: {exc}"
            )
        await self._send.send(exited)

    async def _cancel_quietly(self, spec: JobSpec, handle: JobHandle) -> None:
        try:
            await self.dispatcher.cancel(spec, handle)
        except Exception as exc:  # noqa: BLE001
            self.log.warning(f"could not cancel {spec.key}: {exc}")

    async def _suggest(self, n: int, state: SweepState) -> None:
        observations = self._observations.view()  # ``state``'s ended trials: it was planned, so already folded
        pending = [thaw(t.params) for t in state.open_trial_list()]
        try:
            suggestions = await anyio.to_thread.run_sync(
                self.optimizer.suggest, observations, pending, n, limiter=self._optimizer_limiter
            )
        except Exception as exc:  # noqa: BLE001 - the seed's promise: fall back to random and say why
            self.log.warning(f"optimizer failed ({type(exc).__name__}: {exc}); falling back to random search")
            fallback = RandomSearch(self.config.protein_config, self.config.seed).suggest(observations, pending, n)
            suggestions = [
                Suggestion(s.params, {**s.info, "fallback": f"{type(exc).__name__}: {exc}"}) for s in fallback
            ]
        await self._send.send(_Suggested(suggestions))


def _as_logged(value: Any) -> Any:
    """A job's result as the log will hold it. JSON has no NaN or infinity (the store would write null), so
    non-finite numbers become their names ('nan', 'inf', '-inf'): the live state then equals a replay of the
    log, and a NaN score is still reported as "not a finite number" rather than as a missing one."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: _as_logged(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_logged(v) for v in value]
    return value


@contextlib.contextmanager
def _store_errors_alone() -> Iterator[None]:
    """A StoreError raised in the task group leaves it alone, not inside an ExceptionGroup next to the
    cancellations it caused: the command line prints its message and exits with its code."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = group.subgroup(lambda e: isinstance(e, StoreError))
        if found is None:  # a full disk under another of the sweep's files (endpoint.json, say) is the same story
            full = group.subgroup(lambda e: isinstance(e, OSError) and e.errno == errno.ENOSPC)
            while isinstance(full, BaseExceptionGroup):
                full = full.exceptions[0]
            if full is not None:
                raise disk_full(f"write {full.filename or 'a file of the sweep'}", str(full.strerror)) from None
            raise
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        raise found from None


def _observation(t: TrialState, state: SweepState, finals: dict[int, float]) -> Observation:
    """What the optimizer learns from an ended trial; a failure costs what its jobs ran.

    A stopped trial is told at the score it would likely have reached (its value at its last rung plus the median
    gain of the completed trials from there) and at an unknown cost (NaN): stopping it was a decision about the
    trial, not a property of its hyperparameters. Told its partial score at the cost it spent, a cost-aware
    optimizer (Protein) would see poor regions as cheap ones and go looking there; the cost a full run would have
    had is no better when guessed (scaling the seconds spent by the share of steps done scales the job's start-up
    too). Protein leaves a cost it does not know out of its cost model (benchmarks/early_stopping.py measured it).
    """
    if t.status == "completed":
        return Observation(thaw(t.params), t.score, t.cost or 0.0)
    if t.status == "stopped" and t.score is not None:
        score = imputed_score(t, state, finals)
        return Observation(thaw(t.params), t.score if score is None else score, math.nan)
    return Observation(thaw(t.params), None, t.spent, failed=True)


def job_spec(config: SweepConfig, trial: TrialState, job: JobState) -> JobSpec:
    """What a dispatcher is handed for one job of one trial."""
    return JobSpec(
        key=job.key,
        sweep=config.sweep_name,
        run=trial.run,
        trial=job.trial,
        kind=job.kind,  # type: ignore[arg-type]
        attempt=job.attempt,
        argv=list(job.argv),
        env={"SWEEP_NAME": config.sweep_name, "SWEEP_RUN": trial.run, "SWEEP_JOB_KEY": job.key},
        cwd=os.getcwd(),  # type: ignore[arg-type]
        log_dir=config.sweep_dir / trial.run,
        timeout=config.timeout,
        capture_output=config.capture_output,
        dispatcher=job.dispatcher,
    )
