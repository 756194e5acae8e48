"""Logging: structlog, human lines in the seed's look on a terminal (``[SweepOrchestrator] ...``), JSON lines
otherwise (or as asked). Every logger is bound to a ``component`` that becomes the bracketed prefix."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

from orchestrator.render import printable

LogFormat = Literal["auto", "human", "json"]


def _human(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    component = event_dict.pop("component", "SweepOrchestrator")
    message = event_dict.pop("event", "")
    event_dict.pop("timestamp", None)
    level = event_dict.pop("level", "info")
    extra = " ".join(f"{k}={v}" for k, v in event_dict.items())
    prefix = "" if level in ("info", "debug") else f"{level.upper()}: "
    # Job output is echoed through here: its escape sequences are shown, not obeyed by the terminal.
    return printable(f"[{component}] {prefix}{message}" + (f" {extra}" if extra else ""))


def configure_logging(fmt: LogFormat = "auto", stream: Any = None) -> str:
    stream = stream or sys.stdout
    # A library's log record that cannot be written (a full disk under W&B's files) is dropped, not printed as a
    # traceback over the one message that says what happened.
    logging.raiseExceptions = False
    if fmt == "auto":
        fmt = "human" if stream.isatty() else "json"
    renderer: Any = _human if fmt == "human" else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    return fmt


def get_logger(component: str) -> Any:
    return structlog.get_logger().bind(component=component)
