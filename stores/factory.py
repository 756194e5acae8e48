"""Where a sweep's event log lives and how it is opened: one place for the service, the CLI and attach."""

from __future__ import annotations

from pathlib import Path

from stores.sqlite import SQLiteStore

EVENT_LOG = "events.db"  # the file name of a sweep's log inside its sweep directory


def event_log_path(sweep_dir: Path) -> Path:
    return sweep_dir / EVENT_LOG


def open_store(path: Path) -> SQLiteStore:
    """The event log at ``path`` (SQLite, the embedded default); StoreError when it cannot be used."""
    return SQLiteStore(path)
