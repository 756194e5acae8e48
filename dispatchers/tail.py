"""Reading a job's growing output file line by line (the local dispatcher's log following)."""

from __future__ import annotations

import os
from pathlib import Path

_READ_CHUNK = 1 << 20  # bytes of output read per tick at most
_MAX_LINE = 64 * 1024  # longer output lines are split


class Tail:
    """Incremental line reader of a growing file: a stat per call, reads only new bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.size = 0
        self.buf = b""

    def more(self) -> bool:
        return self.offset < self.size

    def read(self) -> list[str]:
        try:
            self.size = os.stat(self.path).st_size
        except FileNotFoundError:
            return []
        if self.size < self.offset:  # replaced or truncated: start over
            self.offset, self.buf = 0, b""
        if self.size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(min(self.size - self.offset, _READ_CHUNK))
        self.offset += len(data)
        return self._split(data)

    def flush(self) -> list[str]:
        rest, self.buf = self.buf, b""
        return [decode(rest)] if rest else []

    def read_all(self) -> list[str]:
        lines = self.read()
        while self.more():
            lines += self.read()
        return lines + self.flush()

    def _split(self, data: bytes) -> list[str]:
        buf = self.buf + data
        hold = b""
        if buf.endswith(b"\r"):  # may be the first half of \r\n
            buf, hold = buf[:-1], b"\r"
        parts = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self.buf = parts.pop() + hold
        lines = [decode(p) for p in parts]
        while len(self.buf) > _MAX_LINE:
            lines.append(decode(self.buf[:_MAX_LINE]))
            self.buf = self.buf[_MAX_LINE:]
        return lines


def decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")
