"""What the HTTP stream makes of odd input from a client: blank tokens and offsets that are not sequence numbers.
A real serve on 127.0.0.1, real HTTP requests."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import serve_env
from tests.test_attach import Sweep, finish


def raw_status(url: str, path: str, header: str) -> int:
    """The status of a GET sent byte for byte (httpx will not send a header value with trailing blanks)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{header}\r\nConnection: close\r\n\r\n".encode())
        return int(sock.recv(64).split()[1])


@pytest.fixture
def sweep(tmp_path: Path):
    s = Sweep(tmp_path, trials=1)
    yield s
    s.cleanup()


@pytest.mark.parametrize("how", [["--args", 'http_token=""'], ["--args", 'http_token="  "'], ["SWEEP_HTTP_TOKEN= "]])
def test_a_blank_token_is_no_token_off_loopback(sweep: Sweep, how: list[str]) -> None:
    sweep.gate.touch()  # were it served after all, it would end
    args, env = [a for a in how if "SWEEP_" not in a], dict(a.split("=", 1) for a in how if "SWEEP_" in a)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--sweep",
            sweep.name,
            "--config",
            "sweep.toml",
            "--overrides",
            "http_host=0.0.0.0",
            *args,
        ],
        cwd=sweep.root,
        env=serve_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "http_host=0.0.0.0 exposes the sweep beyond this machine: set http_token" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (sweep.dir / "events.db").exists()


def test_a_bearer_header_with_nothing_after_it_is_refused(sweep: Sweep) -> None:
    serve = sweep.serve(SWEEP_HTTP_TOKEN="s3cret")
    url = sweep.url()
    for header in ("Bearer", "Bearer ", "Bearer    ", "bearer \t"):
        assert raw_status(url, "/health", f"Authorization: {header}") == 401, header
    assert httpx.get(f"{url}/health", headers={"Authorization": "Bearer s3cret"}, timeout=5).status_code == 200
    sweep.gate.touch()
    assert finish(serve) == 0


@pytest.mark.parametrize(
    "query, headers",
    [
        ("since=99999999999999999999999", {}),
        ("since=9223372036854775808", {}),  # one past SQLite's largest integer
        ("since=-1", {}),
        ("since=1e3", {}),
        ("since=abc", {}),
        ("since=%E2%91%A0", {}),  # a digit to str.isdigit, not a number
        ("", {"Last-Event-ID": "99999999999999999999999"}),
        ("", {"Last-Event-ID": "x"}),
    ],
)
def test_an_offset_that_is_not_a_sequence_number_is_a_400(sweep: Sweep, query: str, headers: dict[str, str]) -> None:
    serve = sweep.serve()
    url = sweep.url()
    reply = httpx.get(f"{url}/events?{query}", headers=headers, timeout=5)
    assert reply.status_code == 400
    assert "must be a whole number from 0 to 9223372036854775807" in reply.json()["error"]
    # The largest one is fine: a stream that starts after it.
    with httpx.stream("GET", f"{url}/events?since=9223372036854775807", timeout=5) as ok:
        assert ok.status_code == 200
    sweep.gate.touch()
    assert finish(serve) == 0
    assert "Traceback" not in sweep.text("serve.log") + sweep.text("serve.log.err")
