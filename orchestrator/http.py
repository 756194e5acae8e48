"""serve's HTTP interface: the event stream, the current state and health, on 127.0.0.1 by default.

- ``GET /events?since=N``: server-sent events (``text/event-stream``), every event with seq > N in order, then live.
  Each event is ``id: <seq>`` plus ``data: {"seq": N, "event": {...}}`` (one line of JSON). A ``Last-Event-ID``
  header (what browsers' EventSource sends on reconnect) counts as ``since``. ``event: lagging`` tells a client it
  fell more than a buffer behind and is being caught up from the log; ``: keepalive`` comments come when idle. The
  response completes after the event that finishes the sweep (or when serve stops: resume with ``since``).
- ``GET /state``: the current SweepState as JSON (counts, config, the trials in flight and recently ended with
  their jobs) with ``last_seq``.
- ``GET /health``: liveness plus stream statistics.

- ``GET /``: the live dashboard (orchestrator/dashboard).

With ``http_token`` set, every request needs ``Authorization: Bearer <token>``, or the dashboard's cookie that
``/?token=<token>`` sets (401 otherwise). Where serve listens is written to ``<sweep_dir>/endpoint.json`` (never
the token) and removed when serve exits cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrator.core.files import write_atomic
from orchestrator.core.state import SweepState, thaw
from orchestrator.dashboard import cookie_token, dashboard_routes
from orchestrator.hub import EventHub, Keepalive, Lagging
from orchestrator.logs import get_logger
from orchestrator.query import offset

if TYPE_CHECKING:
    from orchestrator.service import SweepService

ENDPOINT_FILE = "endpoint.json"
SEND_BUFFER = 256 * 1024  # per-connection kernel send buffer: bounded, so a stuck client costs a bounded amount
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# -- the app -------------------------------------------------------------------------------------------------
def create_app(hub: EventHub, sweep: str, token: str | None = None) -> Starlette:
    token = token if token and token.strip() else None  # a blank token is no token (config refuses it off loopback)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            scheme, given = "bearer", cookie_token(request)  # a browser, after /?token=
        given = given.strip()
        return scheme.lower() == "bearer" and bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse(
                    {
                        "error": "missing or wrong token: send 'Authorization: Bearer <http_token>' "
                        "(in a browser, open /?token=<http_token> once)"
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)

        return endpoint

    async def events(request: Request) -> Response:
        try:
            since = max(
                offset(request.query_params.get("since"), "since"),
                offset(request.headers.get("last-event-id"), "Last-Event-ID"),
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return StreamingResponse(
            _sse(hub, since),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def state(request: Request) -> Response:
        body = state_document(hub.state, hub.last_seq)
        return Response(json.dumps(body, default=str), media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "ok": True,
                "sweep": sweep,
                "pid": os.getpid(),
                "last_seq": hub.last_seq,
                "finished": hub.final_seq is not None,
                "clients": hub.clients,
                "lagged": hub.lagged,
            }
        )

    routes = [
        Route("/events", guarded(events)),
        Route("/state", guarded(state)),
        Route("/health", guarded(health)),
        *dashboard_routes(hub, guarded, token),
    ]
    return Starlette(routes=routes)


async def _sse(hub: EventHub, since: int) -> AsyncIterator[bytes]:
    async with hub.subscribe(since) as sub:
        yield b"retry: 1000\n\n"
        while True:
            batch = await sub.next()
            if batch is None:
                return
            if isinstance(batch, Keepalive):
                yield b": keepalive\n\n"
            elif isinstance(batch, Lagging):
                data = json.dumps({"since": batch.since, "dropped": batch.dropped})
                yield f"event: lagging\ndata: {data}\n\n".encode()
            else:
                yield b"".join(entry.sse for entry in batch)


def state_document(state: SweepState, last_seq: int) -> dict[str, Any]:
    """The state as plain JSON: what ``GET /state`` returns (non-finite numbers become null)."""

    def plain(obj: Any) -> dict[str, Any]:
        return {f.name: _plain_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}

    return {
        "sweep": state.sweep,
        "last_seq": last_seq,
        "finished": state.finished,
        "best_trial": state.best_trial,
        "created_at": state.created_at,
        "resumes": state.resumes,
        "events": state.events,
        "config": _finite(thaw(state.config)),
        "trials_total": state.numbered,
        "completed": state.completed,
        "failed": state.failed,
        "trials": [plain(t) for t in state.shown_trials()],  # in flight and recently ended, each with its jobs
    }


def _plain_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain_value(v) for v in value]
    return _finite(thaw(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- endpoint.json -------------------------------------------------------------------------------------------
def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_endpoint(sweep_dir: Path, info: dict[str, Any]) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    write_atomic(sweep_dir / ENDPOINT_FILE, json.dumps(info, indent=2) + "\n")


def remove_endpoint(sweep_dir: Path, pid: int) -> None:
    """Remove it if it is still ours (a newer serve may have replaced it)."""
    path = sweep_dir / ENDPOINT_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()


def read_endpoint(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((sweep_dir / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "port" in info and "host" in info else None


# -- the server inside serve's task group --------------------------------------------------------------------
def http_server(hub: EventHub) -> Callable[[SweepService], Coroutine[Any, Any, None]]:
    """A ``background`` task for SweepService: serves ``hub`` over HTTP while the sweep runs."""

    async def task(service: SweepService) -> None:
        await serve_http(service, hub)

    return task


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)  # accepted connections inherit it
    try:
        sock.bind(addr)
        sock.listen(256)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve_http(service: SweepService, hub: EventHub) -> None:
    import uvicorn

    config = service.config
    log = get_logger("SweepOrchestrator")
    token = config.http_token.get_secret_value() if config.http_token is not None else None
    try:
        sock = _bind(config.http_host, config.http_port)
    except OSError as exc:
        log.error(f"cannot listen on {config.http_host}:{config.http_port} ({exc}); running without the event stream")
        return
    host, port = config.http_host, sock.getsockname()[1]

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # serve keeps its own Ctrl-C behaviour
            yield

    server = Server(
        uvicorn.Config(
            create_app(hub, config.sweep_name, token),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
    )

    async def run_server() -> None:
        with anyio.CancelScope(shield=True):  # shut down gracefully even when the sweep is cancelled
            try:
                await server.serve(sockets=[sock])
            except Exception as exc:  # noqa: BLE001 - the stream failing must not stop the sweep
                log.error(f"the event stream server failed ({type(exc).__name__}: {exc}); the sweep carries on")
            finally:
                server.should_exit = True

    pid = os.getpid()
    info = {
        "sweep": config.sweep_name,
        "host": host,
        "port": port,
        "url": url_for(host, port),
        "pid": pid,
        "token_required": token is not None,
        "started_at": time.time(),
    }
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_server)
        try:
            while not server.started and not server.should_exit:
                await anyio.sleep(0.01)
            if not server.started:
                return
            await anyio.to_thread.run_sync(write_endpoint, config.sweep_dir, info)
            log.info(
                f"Event stream on {info['url']} (follow: python -m orchestrator attach --sweep {config.sweep_name})"
            )
            await anyio.sleep_forever()
        finally:
            hub.close()  # every stream ends; clients resume from their last seq (or are done)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(remove_endpoint, config.sweep_dir, pid)
                with anyio.move_on_after(0.5):
                    while hub.clients:
                        await anyio.sleep(0.02)
                if hub.clients:  # streams stuck writing to clients that do not read: cut them
                    for connection in list(server.server_state.connections):
                        transport = getattr(connection, "transport", None)
                        if transport is not None:
                            transport.abort()
            server.should_exit = True
