"""The dispatcher conformance kit (orchestrator.core.testing) against every dispatcher the project ships."""

from __future__ import annotations

import sys
from pathlib import Path

from dispatchers.local import LocalDispatcher
from dispatchers.skypilot import SkyPilotDispatcher
from orchestrator.core.testing import run_conformance
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
