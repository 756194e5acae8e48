"""Follow a sweep from another terminal: ``python -m orchestrator attach|status --follow --sweep NAME``.

A ``Follower`` reads serve's event stream (``GET /events``, server-sent events; see orchestrator/http.py) from the
start, folds the events into a local SweepState and hands each one on, in order and exactly once. When serve goes
away it waits, re-reads ``<sweep_dir>/endpoint.json`` (a restarted serve listens on a new port) and carries on from
the last sequence number it saw. With serve not running, the same events come from the SQLite log instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from orchestrator.core.events import StoredEvent, event_from_dict
from orchestrator.core.reducer import reduce
from orchestrator.core.state import SweepState
from orchestrator.http import LOOPBACK, read_endpoint
from orchestrator.render import describe, headline, printable, summary, trial_table
from stores.base import StoreError
from stores.factory import event_log_path

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_SERVING = 4
EXIT_INTERRUPTED = 130
TOKEN_ENV = "SWEEP_HTTP_TOKEN"
READ_TIMEOUT = 35.0  # serve sends a keepalive every 10 s; silence this long means the connection is dead
MAX_BACKOFF = 2.0

FINISHED = "finished"
NOT_SERVING = "not_serving"


class Refused(Exception):
    """serve answered 401/403: the token is missing or wrong."""


def note(message: str) -> None:
    """Messages about the connection go to stderr, so stdout holds exactly the sweep's lines."""
    print(f"[attach] {message}", file=sys.stderr, flush=True)


@dataclass
class Follower:
    """Replays then follows one sweep's events; ``on_event(stored, raw_json, state)`` sees each once, in order."""

    sweep_dir: Path
    on_event: Callable[[StoredEvent, str, SweepState], None]
    token: str | None = None
    url: str | None = None  # skip endpoint.json (e.g. serve on another machine)
    state: SweepState = field(default_factory=SweepState)
    last_seq: int = 0
    connected: bool = False
    serving: bool = False  # streaming from a live serve right now
    _lost: bool = False
    _said_waiting: bool = False

    def _handle(self, stored: StoredEvent, raw: str) -> None:
        self.state = reduce(self.state, stored.event)
        self.last_seq = stored.seq
        self.on_event(stored, raw, self.state)

    def _endpoint(self) -> tuple[str, bool] | None:
        """(url, token_required) of a live serve, or None."""
        if self.url:
            return self.url.rstrip("/"), False
        info = read_endpoint(self.sweep_dir)
        if info is None:
            return None
        pid = info.get("pid")
        if info.get("host") in LOOPBACK and isinstance(pid, int) and not _alive(pid):
            return None  # left behind by a serve that was killed
        return str(info.get("url")), bool(info.get("token_required"))

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def follow(self, wait: bool) -> str:
        """Stream from serve until the sweep finishes (FINISHED). Without ``wait``, NOT_SERVING if serve cannot be
        reached before the first connection; after that (or with ``wait``) keep retrying with backoff."""
        backoff = 0.1
        timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            while True:
                endpoint = self._endpoint()
                if endpoint is not None:
                    url, token_required = endpoint
                    if token_required and not self.token:
                        raise Refused(f"serve at {url} requires a token: set {TOKEN_ENV} or pass --token")
                    try:
                        if await self._stream(client, url):
                            return FINISHED
                        backoff = 0.1  # a clean end without the finish: serve is stopping; retry soon
                    except (httpx.TransportError, httpx.DecodingError):
                        pass
                if not self.connected and not wait:
                    return NOT_SERVING
                # serve may have come and gone between two tries: what it did is in the log
                if not self.url and await self.replay_log() and _over(self.state):
                    return FINISHED
                if not self._said_waiting:
                    what = "serve stopped" if self.connected else "serve is not running"
                    note(f"{what}; waiting for it (resuming after seq {self.last_seq}; Ctrl-C to quit)")
                    self._said_waiting = True
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _stream(self, client: httpx.AsyncClient, url: str) -> bool:
        """One connection; True when the sweep finished and the stream ended."""
        async with client.stream("GET", f"{url}/events", params={"since": self.last_seq}, headers=self._headers()) as r:
            if r.status_code in (401, 403):
                raise Refused(f"serve at {url} refused the token ({r.status_code}): check {TOKEN_ENV} or --token")
            if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
                return False  # not our server (a reused port, say)
            if not self.connected or self._lost:
                if self.connected or self._said_waiting:
                    note(f"connected to {url}; resuming after seq {self.last_seq}")
                self.connected, self._lost, self._said_waiting = True, False, False
            self.serving = True
            try:
                async for kind, data in _sse(r.aiter_lines()):
                    if kind == "message":
                        stored = _stored(data)
                        if stored.seq <= self.last_seq:
                            continue  # already seen
                        if stored.seq != self.last_seq + 1:
                            note(f"gap after seq {self.last_seq} (got {stored.seq}); reconnecting")
                            return False
                        self._handle(stored, data)
                    elif kind == "lagging":
                        note(f"fell behind the live stream; catching up from the log after seq {self.last_seq}")
            except (httpx.TransportError, httpx.DecodingError):
                self._lost, self.serving = True, False
                raise
        self._lost, self.serving = True, False
        return _over(self.state)

    async def replay_log(self) -> bool:
        """Hand on the stored events after ``last_seq`` from the SQLite log; False if there is no log."""
        db = event_log_path(self.sweep_dir)
        if not db.exists():
            return False

        def read() -> list[StoredEvent]:
            from stores.factory import open_store

            try:
                store = open_store(db)
            except StoreError as exc:
                if exc.kind == "damaged":
                    raise
                return []  # being created by a serve starting up: nothing to read yet
            try:
                return list(store.read(self.last_seq))
            except StoreError as exc:
                if exc.kind == "damaged":
                    raise
                return []
            finally:
                store.close()

        for stored in await anyio.to_thread.run_sync(read):
            self._handle(stored, stored.to_json())
        return True


def _over(state: SweepState) -> bool:
    """Serve has nothing more to do: the sweep finished, or it stopped (a resume would say so on the stream)."""
    return state.finished or state.stopped is not None


def _stored(data: str) -> StoredEvent:
    """One stream message; an event type this version does not know becomes an UnknownEvent, not an error."""
    raw = json.loads(data)
    return StoredEvent(seq=int(raw["seq"]), event=event_from_dict(raw["event"]))


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event type, data) pairs from a text/event-stream body."""
    kind, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scheduler_name(state: SweepState) -> str:
    from orchestrator.core.scheduler import OptimizingScheduler, SequentialScheduler

    return SequentialScheduler.name if state.config.get("scheduler") == "sequential" else OptimizingScheduler.name


def _sweep_dir(ns: Any) -> Path:
    return Path(ns.train_dir or "train_dir") / ns.sweep


def _token(ns: Any) -> str | None:
    return getattr(ns, "token", None) or os.environ.get(TOKEN_ENV) or None


# -- attach ------------------------------------------------------------------------------------------------
def cmd_attach(ns: Any) -> int:
    """``attach``: print the sweep's lines (or raw events with --json) from --since on, then follow live."""
    sweep_dir = _sweep_dir(ns)
    since = max(0, ns.since)

    def show(stored: StoredEvent, raw: str, state: SweepState) -> None:
        if stored.seq <= since:
            return  # folded for context, not printed
        if ns.json:
            print(raw, flush=True)
            return
        line = describe(stored.event, state, scheduler_name(state))
        if line is not None:
            print(printable(f"[{line[0]}] {line[1]}"), flush=True)

    follower = Follower(sweep_dir, show, token=_token(ns), url=ns.url)
    return _run(ns, follower, lambda: None)


def _run(ns: Any, follower: Follower, at_end: Callable[[], None], during: Any = None) -> int:
    if not ns.url and not sweep_dir_exists(follower.sweep_dir) and not ns.wait:
        print(
            f"error: no sweep named {ns.sweep!r} under {follower.sweep_dir.parent}/ (is --train-dir right? "
            f"or pass --wait to wait for it)",
            file=sys.stderr,
        )
        return EXIT_USAGE

    async def main() -> int:
        code = EXIT_USAGE
        async with anyio.create_task_group() as tg:
            if during is not None:
                tg.start_soon(during)
            try:
                code = await _attach_flow(ns, follower, at_end)
            except Refused as exc:
                print(f"error: {exc}", file=sys.stderr)
            except StoreError as exc:  # a damaged log: say so, not "nothing is stored yet"
                print(f"error: {exc}", file=sys.stderr)
                code = exc.exit_code
            tg.cancel_scope.cancel()
        return code

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    # (a closed stdout pipe, as in `attach | head`, ends the command quietly in orchestrator/__main__.py)


def sweep_dir_exists(sweep_dir: Path) -> bool:
    return event_log_path(sweep_dir).exists() or (sweep_dir / "endpoint.json").exists()


async def _attach_flow(ns: Any, follower: Follower, at_end: Callable[[], None]) -> int:
    human = not getattr(ns, "json", False)
    outcome = await follower.follow(wait=False)
    if outcome == NOT_SERVING:
        note(f"serve is not running for sweep {ns.sweep!r}")
        if ns.history and await follower.replay_log() and not _over(follower.state):
            note(
                f"the stored history ends at seq {follower.last_seq}" if follower.last_seq else "nothing is stored yet"
            )
        if _over(follower.state):
            outcome = FINISHED
        elif not ns.wait:
            if follower.state.sweep is not None:
                at_end()
            note(f"start it with: python -m orchestrator serve --sweep {ns.sweep} (or pass --wait)")
            return EXIT_NOT_SERVING
        else:
            outcome = await follower.follow(wait=True)
    if outcome == FINISHED:
        at_end()
        if human and getattr(ns, "summary", True) and follower.state.sweep is not None:
            print(summary(follower.state), flush=True)
    return EXIT_OK


# -- status --follow ---------------------------------------------------------------------------------------
class LiveTable:
    """The trial table, redrawn in place on a terminal with rich's Live (plain periodic prints otherwise). Its
    headline says when serve is not running."""

    def __init__(self, stream: Any, interval: float | None, follower: Follower | None = None):
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self.follower = follower
        self.state = SweepState()
        self.dirty = True
        self._printed = 0.0
        self._live: Any = None

    def on_event(self, stored: StoredEvent, raw: str, state: SweepState) -> None:
        self.state = state
        self.dirty = True

    def text(self) -> str:
        serving = self.follower.serving if self.follower is not None else None
        head = f"{headline(self.state, serving)}  ({time.strftime('%H:%M:%S')})"
        return head + "\n" + trial_table(self.state)

    def draw(self) -> None:
        text = self.text()
        if self.tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            if self._live is None:
                # "crop": a table taller than the terminal keeps its top (the headline) and stays in place
                self._live = Live(console=Console(file=self.stream), auto_refresh=False, vertical_overflow="crop")
                self._live.start()
            self._live.update(Text(text), refresh=True)
        else:
            self.stream.write(text + "\n\n")
            self.stream.flush()
        self.dirty = False
        self._printed = time.monotonic()

    def close(self) -> None:
        """Leave the last table on the screen and the cursor below it."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def finish(self) -> None:
        self.draw()
        self.close()

    async def loop(self) -> None:
        while True:
            if self.state.sweep is None:
                await anyio.sleep(0.1)
            elif self.tty:
                await anyio.sleep(0.1)
                if self.dirty or time.monotonic() - self._printed >= 1.0:  # runtimes tick every second
                    self.draw()
            else:
                interval = self.interval or float(self.state.config.get("monitoring_interval", 10.0))
                await anyio.sleep(max(0.1, self._printed + interval - time.monotonic()))
                if time.monotonic() - self._printed >= interval and self.state.sweep is not None:
                    self.draw()


def cmd_status_follow(ns: Any) -> int:
    """``status --follow``: the live trial table, driven by the event stream so it is never behind."""
    table = LiveTable(sys.stdout, ns.interval)
    follower = Follower(_sweep_dir(ns), table.on_event, token=_token(ns), url=getattr(ns, "url", None))
    table.follower = follower
    ns.json, ns.summary = False, False
    try:
        return _run(ns, follower, table.finish, during=table.loop)
    finally:
        table.close()


def serve_is_running(sweep_dir: Path) -> bool:
    """A live serve has published its endpoint for this sweep."""
    return Follower(sweep_dir, lambda *_: None)._endpoint() is not None
