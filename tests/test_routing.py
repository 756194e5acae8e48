"""Routing and the plugin registry: modes, per-kind routes, and dispatchers that misbehave (without installing
anything: entry points are stubbed)."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import anyio
import pytest

from dispatchers import registry
from dispatchers.registry import DispatcherError, RoutingDispatcher, build_dispatcher, parse_routes
from orchestrator.jobs import Exited, JobHandle, JobSpec, Output


class Good:
    def __init__(self, name: str, **options):
        self.name, self.options, self.closed = name, options, False

    async def submit(self, spec):
        return JobHandle(spec.key, self.name, {"n": 1})

    async def find(self, spec):
        return None

    async def watch(self, spec, handle):
        yield Output("hi")
        yield Exited(0, {"score": 1.0})

    async def cancel(self, spec, handle):
        pass

    async def aclose(self):
        self.closed = True


class Raises(Good):
    async def submit(self, spec):
        raise RuntimeError("backend down")

    async def watch(self, spec, handle):
        yield Output("x")
        raise ValueError("stream broke")


class Garbage(Good):
    async def submit(self, spec):
        return {"not": "a handle"}

    async def watch(self, spec, handle):
        yield "a string"


class NoExit(Good):
    async def watch(self, spec, handle):
        yield Output("bye")


class Hangs(Good):
    async def find(self, spec):
        await anyio.sleep_forever()

    async def aclose(self):
        raise RuntimeError("cannot close")


class Incomplete:
    def __init__(self, name: str):
        self.name = name


def explode(name: str, **options):
    raise RuntimeError("no credentials")


mod = types.ModuleType("fake_plugins")
for obj in (Good, Raises, Garbage, NoExit, Hangs, Incomplete, explode):
    setattr(mod, obj.__name__, obj)
sys.modules["fake_plugins"] = mod


@pytest.fixture(autouse=True)
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = {
        n: EntryPoint(n, v, registry.ENTRY_POINT_GROUP)
        for n, v in {
            "local": "fake_plugins:Good",
            "skypilot": "fake_plugins:Good",
            "good": "fake_plugins:Good",
            "raises": "fake_plugins:Raises",
            "garbage": "fake_plugins:Garbage",
            "noexit": "fake_plugins:NoExit",
            "hangs": "fake_plugins:Hangs",
            "incomplete": "fake_plugins:Incomplete",
            "explode": "fake_plugins:explode",
            "missing": "no_such_module_xyz:Thing",
        }.items()
    }
    monkeypatch.setattr(registry, "available", lambda: eps)


def spec(dispatcher: str) -> JobSpec:
    return JobSpec(
        key="s_trial_0001.train.1",
        sweep="s",
        run="s_trial_0001",
        trial=1,
        kind="train",
        attempt=1,
        argv=["true"],
        cwd=Path("."),
        dispatcher=dispatcher,
    )


def test_modes_and_per_kind_routes() -> None:
    assert parse_routes("local") == {"train": "local", "eval": "local"}
    assert parse_routes("skypilot") == {"train": "skypilot", "eval": "skypilot"}
    assert parse_routes("hybrid_remote_train") == {"train": "skypilot", "eval": "local"}
    assert parse_routes("good") == {"train": "good", "eval": "good"}
    assert parse_routes("train=good, eval=local") == {"train": "good", "eval": "local"}
    router = build_dispatcher("hybrid_remote_train")
    assert router.route("train") == "skypilot" and router.route("eval") == "local"
    for bad, msg in [
        ("train=good", "does not say where eval"),
        ("train=good,test=local", "not <kind>=<dispatcher>"),
        ("train=a,train=b,eval=c", "routes 'train' twice"),
    ]:
        with pytest.raises(DispatcherError, match=msg):
            parse_routes(bad)


def test_start_up_errors_name_the_dispatcher_and_the_fix() -> None:
    cases = [
        ("nosuch", "'nosuch', which is not installed; use one of: .*hybrid_remote_train"),
        ("train=good,eval=nosuch", "'nosuch', which is not installed"),
        ("missing", r"dispatcher plugin 'missing' \(no_such_module_xyz:Thing\) failed to import: ModuleNotFoundError"),
        ("explode", "dispatcher 'explode' failed to start: RuntimeError: no credentials"),
        ("incomplete", "does not implement the Dispatcher protocol: missing submit, find, watch, cancel, aclose"),
    ]
    for dispatcher_type, msg in cases:
        with pytest.raises(DispatcherError, match=msg):
            build_dispatcher(dispatcher_type)
    with pytest.raises(DispatcherError, match="dispatcher 'incomplete' rejected its options"):
        build_dispatcher("incomplete", {"incomplete": {"color": "red"}})
    with pytest.raises(DispatcherError, match="dispatcher_options.skypliot: no dispatcher named 'skypliot'"):
        build_dispatcher("local", {"skypliot": {}})
    router = build_dispatcher("good", {"good": {"color": "red", "call_timeout": 5}})
    assert router.get("good").options == {"color": "red"}  # call_timeout is the router's
    assert router.call_timeouts["good"] == 5


def test_misbehaving_dispatchers_raise_dispatcher_errors_naming_them() -> None:
    async def watch_all(router: RoutingDispatcher, name: str) -> list:
        return [u async for u in router.watch(spec(name), JobHandle("k", name))]

    async def main() -> None:
        router = RoutingDispatcher({"train": "good", "eval": "good"}, {"hangs": {"call_timeout": 0.2}})
        assert (await router.submit(spec("good"))).data == {"n": 1}
        assert [type(u).__name__ for u in await watch_all(router, "good")] == ["Output", "Exited"]
        with pytest.raises(
            DispatcherError, match=r"'raises': submit\(s_trial_0001.train.1\) failed: RuntimeError: backend down"
        ):
            await router.submit(spec("raises"))
        with pytest.raises(DispatcherError, match="'raises': watch.* failed: ValueError: stream broke"):
            await watch_all(router, "raises")
        with pytest.raises(DispatcherError, match="returned {'not': 'a handle'}, not a JobHandle"):
            await router.submit(spec("garbage"))
        with pytest.raises(DispatcherError, match="yielded 'a string', not a job update"):
            await watch_all(router, "garbage")
        with pytest.raises(DispatcherError, match="ended without reporting the job's exit"):
            await watch_all(router, "noexit")
        with pytest.raises(DispatcherError, match=r"'hangs': find\(s_trial_0001.train.1\) did not return within 0.2 s"):
            await router.find(spec("hangs"))
        good = router.get("good")
        with pytest.raises(DispatcherError, match="hangs: RuntimeError: cannot close"):
            await router.aclose()
        assert good.closed  # one broken plugin does not keep the others open

    anyio.run(main)


def test_the_skypilot_dispatcher_is_registered_in_the_package() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert names["skypilot"] == "dispatchers.skypilot:SkyPilotDispatcher"
