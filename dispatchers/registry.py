"""Dispatchers by name: built-ins and third-party plugins registered under the entry point group
``orchestrator.dispatchers``, and the routing that sends each job kind to one of them."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, AsyncIterator

from dispatchers.base import Dispatcher
from orchestrator.jobs import JobHandle, JobSpec, JobUpdate

ENTRY_POINT_GROUP = "orchestrator.dispatchers"

# dispatcher_type -> which dispatcher runs each job kind.
MODES: dict[str, dict[str, str]] = {
    "local": {"train": "local", "eval": "local"},
}


class DispatcherError(Exception):
    """A dispatcher name or option that cannot be used; the message names the fix."""


def available() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_dispatcher(name: str, options: dict[str, Any] | None = None) -> Dispatcher:
    eps = available()
    if name not in eps:
        raise DispatcherError(f"unknown dispatcher {name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    factory = eps[name].load()
    return factory(name=name, **(options or {}))


class RoutingDispatcher:
    """Routes each job to the dispatcher its JobSpec names; ``route(kind)`` picks that name for new jobs."""

    name = "routing"

    def __init__(self, routes: dict[str, str], options: dict[str, dict[str, Any]] | None = None):
        self.routes = routes
        self.options = options or {}
        self._dispatchers: dict[str, Dispatcher] = {}

    def route(self, kind: str) -> str:
        return self.routes[kind]

    def get(self, name: str) -> Dispatcher:
        if name not in self._dispatchers:
            self._dispatchers[name] = load_dispatcher(name, self.options.get(name))
        return self._dispatchers[name]

    async def submit(self, spec: JobSpec) -> JobHandle:
        return await self.get(spec.dispatcher).submit(spec)

    async def find(self, spec: JobSpec) -> JobHandle | None:
        return await self.get(spec.dispatcher).find(spec)

    def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        return self.get(spec.dispatcher).watch(spec, handle)

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        await self.get(spec.dispatcher).cancel(spec, handle)

    async def aclose(self) -> None:
        for dispatcher in self._dispatchers.values():
            await dispatcher.aclose()


def build_dispatcher(dispatcher_type: str, options: dict[str, dict[str, Any]] | None = None) -> RoutingDispatcher:
    """The router for a sweep's ``dispatcher_type``: a mode above, or any one installed dispatcher's name."""
    if dispatcher_type in MODES:
        routes = MODES[dispatcher_type]
    elif dispatcher_type in available():
        routes = {"train": dispatcher_type, "eval": dispatcher_type}
    else:
        names = sorted(set(MODES) | set(available()))
        raise DispatcherError(f"dispatcher_type {dispatcher_type!r} is not one of: {', '.join(names)}")
    router = RoutingDispatcher(routes, options)
    for name in set(routes.values()):
        router.get(name)  # fail now, at start-up, on a broken plugin or bad option
    return router
