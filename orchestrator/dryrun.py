"""``python -m orchestrator dryrun --sweep X``: build a sweep's first job exactly as serve would and hand it to its
dispatcher's dry run (for SkyPilot: the real ``sky.launch(..., dryrun=True)``: client, API server and optimizer
run, nothing is provisioned). Catches a bad GPU name, cloud or command before a week-long sweep starts.

Any SkyPilot SDK call starts SkyPilot's local API server when none is running. A dry run leaves things as it found
them: a local API server it started is stopped again (``sky api stop``), and it says so."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from dispatchers.base import DispatcherError, DryRun, LocalApiServer
from dispatchers.registry import build_dispatcher
from orchestrator.core.config import ConfigError, SweepConfig
from orchestrator.preflight import first_job, preflight
from orchestrator.service import job_spec


def dry_run(config: SweepConfig, kind: str) -> str:
    """The dispatcher's report on the first trial's ``kind`` job (at the search center)."""
    try:
        router = build_dispatcher(config.dispatcher_type, config.dispatcher_options)
        name = router.route(kind)
        dispatcher = router.get(name)
    except DispatcherError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(dispatcher, DryRun):
        raise ConfigError(f"{kind} jobs of this sweep go to {name!r}, which offers no dry run")
    trial, job = first_job(config, kind, name)
    try:
        return anyio.run(dispatcher.dry_run, job_spec(config, trial, job))
    except ValueError as exc:  # the dispatcher's own verdict on the job, e.g. a missing program
        raise ConfigError(str(exc)) from None


def dry_run_report(config: SweepConfig, kind: str, say: Callable[[str], None]) -> None:
    """The preflight, then the dispatcher's dry run, each line to ``say`` as it comes; a local SkyPilot API server
    they started is stopped again."""
    try:
        router = build_dispatcher(config.dispatcher_type, config.dispatcher_options)
    except DispatcherError as exc:
        raise ConfigError(str(exc)) from None
    servers: dict[str, LocalApiServer] = {}
    for name in {router.route("train"), router.route("eval")}:
        dispatcher = router.get(name)
        if isinstance(dispatcher, LocalApiServer) and anyio.run(dispatcher.api_server_running) is False:
            servers[name] = dispatcher  # not running now: whatever starts it is this dry run
    try:
        for line in preflight(config):
            say(line)
        say(dry_run(config, kind))
    finally:
        for name, server in servers.items():
            try:
                anyio.run(server.stop_api_server)
            except Exception as exc:  # noqa: BLE001 - say what is left running and how to stop it
                say(
                    f"{name}: SkyPilot's local API server, started by this dry run, is still running ({exc}); "
                    "stop it with: sky api stop"
                )
            else:
                say(f"{name}: stopped SkyPilot's local API server again (this dry run started it)")
