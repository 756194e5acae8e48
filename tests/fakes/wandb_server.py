"""A small stand-in for the W&B GraphQL API on 127.0.0.1, enough for ``wandb.Api().runs(path, filters=...)``.

It answers the queries wandb 0.26.1's public API sends (see ``wandb/apis/public/api.py`` and ``runs.py``):
``{ viewer { id } }`` (login check), ``GetViewer``, ``GetDefaultEntity`` and ``Runs`` (the full ``RunFragment``,
``lazy=False``), with the response shapes of the real service: ``config`` and ``summaryMetrics`` as JSON
strings, config values wrapped as ``{"value": ..., "desc": null}``, cursor pagination with ``pageInfo``, a
``null`` project for an unknown project, HTTP 401 for a wrong API key. Any other query gets a GraphQL error and
is recorded in ``unhandled`` so a test notices when the client asks for something new.

Its runs usually come from real offline files (:func:`tests.fakes.wandb_files.read_offline_runs`): the server
plays "W&B after ``wandb sync``".
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fakes.wandb_files import OfflineRun, read_offline_runs


@dataclass
class ServedRun:
    id: str
    project: str
    entity: str
    display_name: str
    group: str | None
    job_type: str | None
    state: str
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history_keys: list[str] = field(default_factory=list)
    history_lines: int = 0
    last_step: int | None = None
    created_at: float = 0.0

    @classmethod
    def from_offline(cls, run: OfflineRun, entity: str, project: str) -> ServedRun:
        keys = sorted({k for row in run.history for k in row})
        steps = [row["_step"] for row in run.history if "_step" in row]
        return cls(
            id=run.run_id,
            project=project,
            entity=entity,
            display_name=run.display_name or run.run_id,
            group=run.group or None,
            job_type=run.job_type or None,
            state=run.state,
            tags=list(run.tags),
            config={k: v for k, v in run.config.items()},
            summary=dict(run.summary),
            history_keys=keys,
            history_lines=len(run.history),
            last_step=max(steps) if steps else None,
            created_at=run.created_at,
        )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def _field(run: ServedRun, name: str) -> Any:
    return {
        "group": run.group,
        "name": run.id,
        "displayName": run.display_name,
        "display_name": run.display_name,
        "state": run.state,
        "jobType": run.job_type,
        "job_type": run.job_type,
    }.get(name, KeyError)


def _matches(run: ServedRun, filters: dict[str, Any]) -> bool:
    for key, want in filters.items():
        if key == "$and":
            if not all(_matches(run, f) for f in want):
                return False
            continue
        if key == "$or":
            if not any(_matches(run, f) for f in want):
                return False
            continue
        have = _field(run, key)
        if have is KeyError:
            raise ValueError(f"unsupported filter key {key!r} in the fake W&B server")
        if isinstance(want, dict):
            if "$in" in want and have not in want["$in"]:
                return False
            if "$ne" in want and have == want["$ne"]:
                return False
            if "$eq" in want and have != want["$eq"]:
                return False
        elif have != want:
            return False
    return True


class FakeWandbServer:
    """``with FakeWandbServer(api_key=...) as server:`` then point ``WANDB_BASE_URL`` at ``server.url``."""

    def __init__(self, api_key: str, entity: str = "test-entity", runs: list[ServedRun] | None = None):
        self.api_key = api_key
        self.entity = entity
        self.runs: list[ServedRun] = list(runs or [])
        self.queries: list[str] = []
        self.unhandled: list[str] = []
        self.auth_failures = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- data -------------------------------------------------------------------------------------------------

    def load_offline(self, root: Path, project: str, entity: str | None = None) -> dict[str, ServedRun]:
        """Serve every run written offline under ``root``, as if ``wandb sync`` had uploaded it."""
        added = {}
        for run in read_offline_runs(root).values():
            served = ServedRun.from_offline(run, entity or self.entity, project)
            self.runs = [r for r in self.runs if not (r.id == served.id and r.project == project)]
            self.runs.append(served)
            added[served.id] = served
        return added

    def run(self, run_id: str) -> ServedRun:
        return next(r for r in self.runs if r.id == run_id)

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeWandbServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, payload = server._handle(self.path, self.headers.get("Authorization", ""), body)
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeWandbServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- GraphQL ----------------------------------------------------------------------------------------------

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == "api" and key == self.api_key

    def _handle(self, path: str, auth: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") != "/graphql":
            return 404, {"errors": [{"message": "not found"}]}
        if not self._authorized(auth):
            self.auth_failures += 1
            return 401, {"errors": [{"message": "user is not logged in"}]}
        request = json.loads(body or b"{}")
        query: str = request.get("query", "")
        variables: dict[str, Any] = request.get("variables") or {}
        m = re.search(r"\b(query|mutation)\s+(\w+)", query)
        name = (
            m.group(2) if m else ("ViewerId" if re.fullmatch(r"\s*\{\s*viewer\s*\{\s*id\s*\}\s*\}\s*", query) else "")
        )
        self.queries.append(name or query[:60])
        if name in ("ViewerId", "GetViewer", "GetDefaultEntity", "Viewer"):
            return 200, {"data": {"viewer": self._viewer()}}
        if name == "Runs":
            try:
                return 200, {"data": {"project": self._runs(variables)}}
            except ValueError as exc:
                return 200, {"errors": [{"message": str(exc)}], "data": None}
        self.unhandled.append(name or query[:60])
        return 200, {"errors": [{"message": f"Cannot query {name or 'this'} on the fake W&B server"}], "data": None}

    def _viewer(self) -> dict[str, Any]:
        return {
            "id": base64.b64encode(b"User:1").decode(),
            "name": "Test User",
            "username": "tester",
            "email": "tester@example.com",
            "admin": False,
            "flags": None,
            "entity": self.entity,
            "deletedAt": None,
            "apiKeys": {"edges": []},
            "teams": {"edges": [{"node": {"name": self.entity}}]},
        }

    def _runs(self, variables: dict[str, Any]) -> dict[str, Any] | None:
        entity, project = variables.get("entity"), variables.get("project")
        in_project = [r for r in self.runs if r.project == project and r.entity == entity]
        if not in_project:
            return None  # the real API answers an unknown project with project: null
        filters = json.loads(variables.get("filters") or "{}")
        runs = [r for r in in_project if _matches(r, filters)]
        order = variables.get("order") or "+created_at"
        runs.sort(key=lambda r: (r.created_at, r.id), reverse=order.startswith("-"))
        per_page = int(variables.get("perPage") or 50)
        cursor = variables.get("cursor")
        start = int(base64.b64decode(cursor).decode().rpartition(":")[2]) + 1 if cursor else 0
        page = runs[start : start + per_page]
        edges = [
            {"node": self._node(r), "cursor": base64.b64encode(f"cursor:{start + i}".encode()).decode()}
            for i, r in enumerate(page)
        ]
        return {
            "internalId": base64.b64encode(f"Project:{project}".encode()).decode(),
            "runCount": len(runs),
            "readOnly": False,
            "runs": {
                "edges": edges,
                "pageInfo": {
                    "endCursor": edges[-1]["cursor"] if edges else None,
                    "hasNextPage": start + per_page < len(runs),
                },
            },
        }

    def _node(self, run: ServedRun) -> dict[str, Any]:
        config = {k: {"value": v, "desc": None} for k, v in run.config.items()}
        config["_wandb"] = {"value": {"cli_version": "0.26.1", "python_version": "3.11.7"}, "desc": None}
        return {
            "projectId": 1,
            "id": base64.b64encode(f"Run:v1:{run.id}:{run.project}:{run.entity}".encode()).decode(),
            "tags": run.tags,
            "name": run.id,
            "displayName": run.display_name,
            "sweepName": None,
            "state": run.state,
            "config": json.dumps(config),
            "group": run.group,
            "jobType": run.job_type,
            "commit": None,
            "readOnly": False,
            "createdAt": _iso(run.created_at),
            "heartbeatAt": _iso(run.created_at),
            "description": None,
            "notes": None,
            "systemMetrics": "{}",
            "summaryMetrics": json.dumps(run.summary),
            "historyLineCount": run.history_lines,
            "user": {"name": "Test User", "username": "tester"},
            "historyKeys": {
                "lastStep": run.last_step,
                "keys": {k: {"typeCounts": [{"type": "number", "count": 1}]} for k in run.history_keys},
            },
        }
