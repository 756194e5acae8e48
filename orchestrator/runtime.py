"""Wiring: build a SweepService from a SweepConfig with the configured store, dispatcher, optimizer and mirrors."""

from __future__ import annotations

from pathlib import Path

from dispatchers.base import DispatcherError
from dispatchers.registry import build_dispatcher
from optimizers import make_optimizer
from orchestrator.console import ConsoleSubscriber
from orchestrator.core.config import ConfigError, SweepConfig
from orchestrator.core.scheduler import make_scheduler
from orchestrator.core.subscriber import Subscriber
from orchestrator.http import http_server
from orchestrator.hub import EventHub
from orchestrator.service import SweepService
from stores.factory import event_log_path, open_store
from stores.wandb import WandbMirror
from stores.wandb_client import resolve_mode


def build_service(config: SweepConfig, db: Path | None = None, log_format: str = "human") -> SweepService:
    try:
        dispatcher = build_dispatcher(config.dispatcher_type, config.dispatcher_options)
    except DispatcherError as exc:
        raise ConfigError(str(exc)) from None
    store = open_store(db or event_log_path(config.sweep_dir))
    hub = EventHub(open_store(store.path))  # its own connection: catch-up reads never wait behind appends
    console = ConsoleSubscriber(
        make_scheduler(config).name,
        capture_output=config.capture_output,
        monitoring_interval=config.monitoring_interval,
        human=log_format == "human",
    )
    subscribers: list[Subscriber] = [console, hub]  # the console first: its summary is printed before W&B drains
    if resolve_mode(config.wandb) != "disabled":
        subscribers.append(WandbMirror(config, config.sweep_dir))
    return SweepService(
        config,
        store,
        dispatcher,
        make_optimizer(config.protein_config, config.seed, config.max_trials),
        subscribers=subscribers,
        background=[http_server(hub)],
    )
