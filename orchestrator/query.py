"""Numbers read from a request's query or headers: bounded, or a ValueError naming the parameter (a 400)."""

from __future__ import annotations

MAX_OFFSET = 2**63 - 1  # SQLite's largest integer: a sequence number beyond it cannot exist


def offset(text: str | None, name: str, default: int = 0) -> int:
    """A whole number from 0 to MAX_OFFSET (absent: ``default``); ValueError naming ``name`` otherwise."""
    if text is None or text == "":
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_OFFSET:
        raise ValueError(f"{name} must be a whole number from 0 to {MAX_OFFSET}, got {text[:40]!r}")
    return int(text)
