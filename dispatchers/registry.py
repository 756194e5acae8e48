"""Dispatchers by name: built-ins and third-party plugins registered under the entry point group
``orchestrator.dispatchers``, and the routing that sends each job kind to one of them.

A sweep picks its dispatchers with ``dispatcher_type``:

- a mode: ``local``, ``skypilot``, ``hybrid_remote_train`` (train on SkyPilot, eval locally);
- any one installed dispatcher's name (every job kind goes there), e.g. a plugin's ``echo``;
- a route per job kind: ``"train=skypilot,eval=local"``.

Options for each dispatcher come from ``dispatcher_options.<name>``. One key there belongs to the router, not
the dispatcher: ``call_timeout`` (seconds a submit/find/cancel may take before it fails the job).

A plugin that cannot be imported or constructed is a ``DispatcherError`` naming it, at start-up. A plugin that
raises later, returns something that is not a handle, or yields something that is not a job update fails that
job with a message naming the plugin; the service lives on (see ``dispatchers/base.py``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from importlib.metadata import entry_points
from typing import Any, TypeVar

import anyio

from dispatchers.base import Dispatcher, DispatcherError  # DispatcherError: also importable from here
from orchestrator.core.jobs import JOB_UPDATES, Exited, JobHandle, JobSpec, JobUpdate

ENTRY_POINT_GROUP = "orchestrator.dispatchers"
JOB_KINDS = ("train", "eval")
DEFAULT_CALL_TIMEOUT = 900.0  # a SkyPilot launch that has to start its jobs controller takes minutes

# dispatcher_type -> which dispatcher runs each job kind.
MODES: dict[str, dict[str, str]] = {
    "local": {"train": "local", "eval": "local"},
    "skypilot": {"train": "skypilot", "eval": "skypilot"},
    "hybrid_remote_train": {"train": "skypilot", "eval": "local"},
}

T = TypeVar("T")
_UPDATES = JOB_UPDATES


def available() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_dispatcher(name: str, options: dict[str, Any] | None = None) -> Dispatcher:
    """Import and construct the dispatcher registered as ``name``; every failure is a DispatcherError."""
    eps = available()
    if name not in eps:
        raise DispatcherError(
            f"unknown dispatcher {name!r}; installed: {', '.join(sorted(eps)) or 'none'} "
            f"(plugins register under the entry point group {ENTRY_POINT_GROUP!r})"
        )
    ep = eps[name]
    try:
        factory = ep.load()
    except Exception as exc:
        raise DispatcherError(
            f"dispatcher plugin {name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        dispatcher = factory(name=name, **(options or {}))
    except DispatcherError:
        raise
    except TypeError as exc:
        raise DispatcherError(
            f"dispatcher {name!r} rejected its options {sorted(options or {})}: {exc} "
            f"(check dispatcher_options.{name} in the sweep file)"
        ) from exc
    except Exception as exc:
        raise DispatcherError(f"dispatcher {name!r} failed to start: {type(exc).__name__}: {exc}") from exc
    missing = [m for m in ("submit", "find", "watch", "cancel", "aclose") if not callable(getattr(dispatcher, m, None))]
    if missing:
        raise DispatcherError(
            f"dispatcher {name!r} ({ep.value}) does not implement the Dispatcher protocol: "
            f"missing {', '.join(missing)} (see docs/dispatchers.md)"
        )
    return dispatcher


def parse_routes(dispatcher_type: str) -> dict[str, str]:
    """``dispatcher_type`` -> ``{kind: dispatcher name}``; DispatcherError with the accepted forms otherwise."""
    if dispatcher_type in MODES:
        return dict(MODES[dispatcher_type])
    if "=" in dispatcher_type:
        routes: dict[str, str] = {}
        for part in dispatcher_type.split(","):
            kind, sep, name = (s.strip() for s in part.partition("="))
            if not sep or kind not in JOB_KINDS or not re.match(r"^[A-Za-z0-9_.-]+$", name):
                raise DispatcherError(
                    f"dispatcher_type {dispatcher_type!r}: {part.strip()!r} is not <kind>=<dispatcher> with kind "
                    f'one of {", ".join(JOB_KINDS)} (e.g. "train=skypilot,eval=local")'
                )
            if kind in routes:
                raise DispatcherError(f"dispatcher_type {dispatcher_type!r} routes {kind!r} twice")
            routes[kind] = name
        missing = [k for k in JOB_KINDS if k not in routes]
        if missing:
            raise DispatcherError(
                f"dispatcher_type {dispatcher_type!r} does not say where {', '.join(missing)} jobs run "
                f'(e.g. "train=skypilot,eval=local")'
            )
        return routes
    return {kind: dispatcher_type for kind in JOB_KINDS}


class RoutingDispatcher:
    """Routes each job to the dispatcher its JobSpec names; ``route(kind)`` picks that name for new jobs.

    It guards the service against its dispatchers: calls that raise are re-raised as DispatcherError naming the
    dispatcher, calls that hang past ``call_timeout`` fail, and a ``watch`` that yields something other than a
    job update, or ends without an ``Exited``, fails. (The service bounds a whole ``watch`` by the job's
    timeout.)"""

    name = "routing"

    def __init__(
        self,
        routes: dict[str, str],
        options: dict[str, dict[str, Any]] | None = None,
        dispatchers: dict[str, Dispatcher] | None = None,
    ):
        """``dispatchers``: instances already built, by name (a program embedding the service, or a test, passing
        its own); the other names are loaded from the installed entry points when first used."""
        self.routes = dict(routes)
        self.options: dict[str, dict[str, Any]] = {}
        self.call_timeouts: dict[str, float] = {}
        for name, opts in (options or {}).items():
            opts = dict(opts or {})
            timeout = opts.pop("call_timeout", DEFAULT_CALL_TIMEOUT)
            try:
                self.call_timeouts[name] = float(timeout)
            except (TypeError, ValueError):
                raise DispatcherError(
                    f"dispatcher_options.{name}.call_timeout must be seconds, got {timeout!r}"
                ) from None
            self.options[name] = opts
        self._dispatchers: dict[str, Dispatcher] = dict(dispatchers or {})

    def route(self, kind: str) -> str:
        try:
            return self.routes[kind]
        except KeyError:
            raise DispatcherError(f"no dispatcher is routed for {kind!r} jobs (routes: {self.routes})") from None

    def get(self, name: str) -> Dispatcher:
        if name not in self._dispatchers:
            self._dispatchers[name] = load_dispatcher(name, self.options.get(name))
        return self._dispatchers[name]

    async def _guard(self, name: str, what: str, call: Awaitable[T]) -> T:
        try:
            with anyio.fail_after(self.call_timeouts.get(name, DEFAULT_CALL_TIMEOUT)):
                return await call
        except TimeoutError:
            limit = self.call_timeouts.get(name, DEFAULT_CALL_TIMEOUT)
            raise DispatcherError(f"dispatcher {name!r}: {what} did not return within {limit:g} s") from None
        except DispatcherError:
            raise
        except Exception as exc:
            raise DispatcherError(f"dispatcher {name!r}: {what} failed: {type(exc).__name__}: {exc}") from exc

    def _check_handle(self, name: str, what: str, handle: Any, spec: JobSpec) -> None:
        if not isinstance(handle, JobHandle):
            raise DispatcherError(f"dispatcher {name!r}: {what} returned {handle!r}, not a JobHandle")

    async def submit(self, spec: JobSpec) -> JobHandle:
        name = spec.dispatcher
        handle = await self._guard(name, f"submit({spec.key})", self._call(name, "submit", spec))
        self._check_handle(name, "submit", handle, spec)
        return handle

    async def find(self, spec: JobSpec) -> JobHandle | None:
        name = spec.dispatcher
        handle = await self._guard(name, f"find({spec.key})", self._call(name, "find", spec))
        if handle is not None:
            self._check_handle(name, "find", handle, spec)
        return handle

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        name = spec.dispatcher
        await self._guard(name, f"cancel({spec.key})", self._call(name, "cancel", spec, handle))

    async def _call(self, name: str, method: str, *args: Any) -> Any:
        return await getattr(self.get(name), method)(*args)

    def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        return self._watch(spec, handle)

    async def _watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        name = spec.dispatcher
        try:
            stream = self.get(name).watch(spec, handle)
            iterator = stream.__aiter__()
        except DispatcherError:
            raise
        except Exception as exc:
            raise DispatcherError(
                f"dispatcher {name!r}: watch({spec.key}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            while True:
                try:
                    update = await iterator.__anext__()
                except StopAsyncIteration:
                    raise DispatcherError(
                        f"dispatcher {name!r}: watch({spec.key}) ended without reporting the job's exit"
                    ) from None
                except DispatcherError:
                    raise
                except Exception as exc:
                    raise DispatcherError(
                        f"dispatcher {name!r}: watch({spec.key}) failed: {type(exc).__name__}: {exc}"
                    ) from exc
                if not isinstance(update, _UPDATES):
                    raise DispatcherError(
                        f"dispatcher {name!r}: watch({spec.key}) yielded {update!r}, not a job update "
                        "(Started, Progress, Report, Output or Exited)"
                    )
                yield update
                if isinstance(update, Exited):
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(5, shield=True):
                    try:
                        await aclose()
                    except Exception:
                        pass

    async def aclose(self) -> None:
        errors = []
        for name, dispatcher in self._dispatchers.items():
            try:
                with anyio.move_on_after(self.call_timeouts.get(name, 30.0)):
                    await dispatcher.aclose()
            except Exception as exc:  # one broken plugin must not keep the others open
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        if errors:
            raise DispatcherError("dispatchers failed to close: " + "; ".join(errors))


def build_dispatcher(dispatcher_type: str, options: dict[str, dict[str, Any]] | None = None) -> RoutingDispatcher:
    """The router for a sweep's ``dispatcher_type`` (a mode, one installed dispatcher's name, or
    ``train=<name>,eval=<name>``), with every routed dispatcher loaded now so a missing plugin or a bad option
    fails at start-up with a DispatcherError, never as a traceback mid-sweep."""
    routes = parse_routes(dispatcher_type)
    installed = available()
    unknown = sorted({n for n in routes.values() if n not in installed})
    if unknown:
        names = sorted(set(MODES) | set(installed))
        raise DispatcherError(
            f"dispatcher_type {dispatcher_type!r} names {', '.join(map(repr, unknown))}, which is not installed; "
            f'use one of: {", ".join(names)}, or "train=<name>,eval=<name>"'
        )
    for name in options or {}:
        if name not in installed:
            raise DispatcherError(
                f"dispatcher_options.{name}: no dispatcher named {name!r} is installed "
                f"(installed: {', '.join(sorted(installed))})"
            )
    router = RoutingDispatcher(routes, options)
    for name in sorted(set(routes.values())):
        router.get(name)  # fail now, at start-up, on a broken plugin or bad option
    return router
