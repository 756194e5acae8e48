"""The dispatcher conformance kit (orchestrator.core.testing) against every dispatcher the project ships."""

from __future__ import annotations

from pathlib import Path

from dispatchers.local import LocalDispatcher
from orchestrator.core.testing import run_conformance


def test_local_keeps_the_dispatcher_contract(tmp_path: Path) -> None:
    run_conformance(lambda: LocalDispatcher(poll_interval=0.05, kill_grace=2.0), tmp_path)
