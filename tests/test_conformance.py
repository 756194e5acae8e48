"""The dispatcher conformance kit (orchestrator.core.testing) against every dispatcher the project ships."""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dispatchers.local import LocalDispatcher
from dispatchers.skypilot import SkyPilotDispatcher
from orchestrator.core.jobs import Exited, JobHandle, JobSpec, JobUpdate
from orchestrator.core.testing import CHECKS, run_conformance
from tests.fakes.sky import FakeSky

sys.path.insert(0, str(Path(__file__).parent / "plugins" / "echo_dispatcher"))
from echo_dispatcher import EchoDispatcher  # noqa: E402


def test_local_keeps_the_dispatcher_contract(tmp_path: Path) -> None:
    run_conformance(lambda: LocalDispatcher(poll_interval=0.05, kill_grace=2.0), tmp_path)


def test_the_skypilot_dispatcher_keeps_the_contract_through_the_fake(tmp_path: Path) -> None:
    """SkyPilot reports FAILED and its own reason, not local's words, and leaves timeouts to the service."""
    state = tmp_path / "sky"
    try:
        run_conformance(
            lambda: SkyPilotDispatcher(
                name="skypilot",
                sdk="tests.fakes.sky:FakeSky",
                sdk_options={"state_dir": str(state), "pending_s": 0.05, "starting_s": 0.05},
                poll_interval=0.05,
                log_reopen_delay=0.05,
            ),
            tmp_path / "kit",
            exact_reasons=False,
            skip=("timeout",),
        )
    finally:
        FakeSky(state).kill_all()


def test_the_echo_plugin_keeps_the_dispatcher_contract(tmp_path: Path) -> None:
    run_conformance(lambda: EchoDispatcher(state_dir=str(tmp_path / "echo"), poll_interval=0.05), tmp_path / "kit")


# -- plugins broken on purpose: the kit names what broke -----------------------------------------------------


class WrongHandle(EchoDispatcher):
    async def submit(self, spec: JobSpec) -> Any:
        handle = await super().submit(spec)
        return dict(handle.data)  # a plain dict instead of a JobHandle


class Forgetful(EchoDispatcher):
    """Keeps its jobs in a directory of its own instance: a restarted service finds none of them."""

    instances = itertools.count()

    def __init__(self, root: Path) -> None:
        super().__init__(state_dir=str(root / f"instance{next(self.instances)}"), poll_interval=0.05)


class WrongReason(EchoDispatcher):
    """Words its own failure reasons (as this example once did) instead of the shared ones."""

    async def watch(self, spec: JobSpec, handle: JobHandle) -> AsyncIterator[JobUpdate]:
        async for update in super().watch(spec, handle):
            if isinstance(update, Exited) and update.exit_code:
                update = Exited(update.exit_code, update.result, update.duration, f"exit code {update.exit_code}")
            yield update


def only(*names: str) -> set[str]:
    return set(CHECKS) - set(names)


@pytest.mark.parametrize(
    ("make", "checks", "named"),
    [
        (lambda root: WrongHandle(state_dir=str(root)), ("result",), "submit() returned dict, not a JobHandle"),
        (Forgetful, ("restart_running", "restart_ended"), "find() after restart returned None for a running job"),
        (
            lambda root: WrongReason(state_dir=str(root), poll_interval=0.05),
            ("exit_nonzero", "killed"),
            "reason for a job killed by SIGKILL was 'exit code -9'",
        ),
    ],
    ids=["wrong handle type", "loses its jobs on restart", "wrong reason"],
)
def test_a_broken_plugin_fails_the_kit_naming_what_broke(
    tmp_path: Path, make: Callable[[Path], Any], checks: tuple[str, ...], named: str
) -> None:
    try:
        with pytest.raises(AssertionError) as failed:
            run_conformance(lambda: make(tmp_path / "state"), tmp_path / "kit", skip=only(*checks))
    finally:
        for marks in (tmp_path / "kit" / "marks").glob("*"):
            (marks / "go").touch()  # a job the broken plugin lost ends now
    assert named in str(failed.value)
    for check in checks:
        assert f"- {check}: " in str(failed.value)  # every broken check is reported, not just the first
