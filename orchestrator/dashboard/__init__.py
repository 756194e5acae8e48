"""The sweep's live dashboard, served at ``/`` by serve's own HTTP server (orchestrator/http.py).

- ``GET /``: the page (static/index.html with its script and style), which draws with plotly.js.
- ``GET /?token=<http_token>``: with a token set, a browser opens this once; it sets an HttpOnly cookie and
  redirects to ``/`` (browsers cannot put a Bearer header on a page or an EventSource). The cookie is accepted
  wherever the header is.
- ``GET /static/<name>``: the page's files, and plotly.min.js as shipped inside the plotly Python package.
- ``GET /trials?offset=&limit=``: a page of trials by number; ``GET /trials?changed_since=SEQ``: the trials any
  event after SEQ touched. Both carry ``summary`` (counts, goal, parameter space, ``last_seq``).

The page loads trials in pages, then follows ``/events`` (server-sent events, no polling): each batch of events
makes it fetch the trials that changed since the last seq it holds, at most a few times a second.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from orchestrator.query import offset
from orchestrator.trials import TrialBook, sweep_summary

if TYPE_CHECKING:
    from orchestrator.hub import EventHub

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "sweep_token"
PAGE_SIZE = 2000
MAX_PAGE = 10000
Handler = Callable[[Request], Awaitable[Response]]
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


@cache
def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def static_file(name: str) -> bytes:
    return plotly_js() if name == "plotly.min.js" else (STATIC / name).read_bytes()


def page(head: str) -> str:
    """index.html with ``head`` (the style and scripts, linked or inlined) in place."""
    return (STATIC / "index.html").read_text().replace("<!--HEAD-->", head)


class LiveBook:
    """A TrialBook kept up with the store, folded in a worker thread, one fold at a time."""

    def __init__(self, hub: EventHub):
        self.hub = hub
        self.book = TrialBook()
        self._lock = anyio.Lock()

    async def warm(self) -> None:
        await self.query(lambda book: b"")

    async def query(self, answer: Callable[[TrialBook], bytes]) -> bytes:
        """``answer(book)`` once the book has every stored event, both in a worker thread (they touch the same
        book, so one at a time)."""

        def run() -> bytes:
            self.book.add(self.hub.reader.read(self.book.seq))
            return answer(self.book)

        async with self._lock:
            return await anyio.to_thread.run_sync(run)


def dashboard_routes(hub: EventHub, guarded: Callable[[Handler], Handler], token: str | None) -> list[Route]:
    live = LiveBook(hub)

    async def index(request: Request) -> Response:
        head = (
            '<link rel="stylesheet" href="static/dashboard.css">\n'
            '<script src="static/plotly.min.js"></script>\n<script src="static/dashboard.js"></script>'
        )
        # After the page is sent, fold the log while the browser loads plotly.js (its first /trials waits for it).
        return Response(
            page(head),
            media_type="text/html",
            headers={"Cache-Control": "no-store"},
            background=BackgroundTask(live.warm),
        )

    async def login_or_index(request: Request) -> Response:
        given = request.query_params.get("token")
        if token is None or given is None:
            return await guarded(index)(request)
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "wrong token in ?token="}, status_code=401)
        response = RedirectResponse(request.url.path, status_code=303)  # drop the token from the address bar
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name != "plotly.min.js" and not (STATIC / name).is_file():
            return JSONResponse({"error": f"no file {name}"}, status_code=404)
        body = await anyio.to_thread.run_sync(static_file, name)
        media = _TYPES.get(Path(name).suffix, "application/octet-stream")
        return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    async def trials(request: Request) -> Response:
        q = request.query_params
        try:
            first = offset(q.get("offset"), "offset")
            limit = min(MAX_PAGE, max(1, offset(q.get("limit"), "limit", PAGE_SIZE)))
            changed_since = offset(q["changed_since"], "changed_since") if "changed_since" in q else None
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        def answer(book: TrialBook) -> bytes:
            rows = book.changed_since(changed_since) if changed_since is not None else book.records(first, limit)
            body = {"summary": sweep_summary(book.state, book.seq), "offset": first, "trials": rows}
            return json.dumps(body).encode()

        return Response(await live.query(answer), media_type="application/json")

    return [
        Route("/", login_or_index),
        Route("/static/{name:str}", guarded(static)),
        Route("/trials", guarded(trials)),
    ]


def cookie_token(request: Request) -> str:
    return request.cookies.get(TOKEN_COOKIE, "")
