"""Keys stay secret: with a (fake) API key in the environment and W&B failing with errors that echo it, the key
appears in no log line, no captured output, no file under the sweep dir (event log, cursor, wandb's own files)
and no exception message."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest
import structlog
from fakes.wandb_files import read_offline_runs
from fakes.wandb_helpers import hermetic_wandb, make_mirror
from fakes.wandb_script import Log, script
from fakes.wandb_server import FakeWandbServer

from orchestrator.config import WandbSettings
from stores.wandb import events_from_wandb
from stores.wandb_client import WandbError, redact

KEY = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
TOKEN = "tok-Zq8pL0s9XyQ2"


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hermetic_wandb(tmp_path, monkeypatch, api_key=KEY)
    monkeypatch.setenv("SWEEP_HTTP_TOKEN", TOKEN)


@pytest.fixture
def logs():
    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    yield out
    structlog.reset_defaults()


def test_redact() -> None:
    assert redact(f"bad key {KEY} and {TOKEN}") == "bad key *** and ***"
    assert redact("local-" + "f" * 40) == "***"
    assert redact("run wbtest_trial_0001 step 12") == "run wbtest_trial_0001 step 12"


def test_no_key_anywhere_when_wandb_fails_with_it(tmp_path: Path, logs: io.StringIO, capfd) -> None:
    sweep = "wbsecret"
    log = Log(tmp_path / "events.db")
    # Explicitly offline: the key in the environment must not send test data anywhere.
    mirror = make_mirror(sweep, tmp_path, flaky=True)
    assert mirror.mode == "offline"
    client = mirror.client
    client.error = ConnectionError(f"POST https://api.wandb.ai/graphql: 401 for api_key={KEY} token={TOKEN}")
    client.down.set()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mirror.run)
            for phase in script(sweep):
                for stored, state in log.append(phase):
                    mirror.publish(stored, state)
            await anyio.sleep(0.3)
            client.down.clear()
            assert await mirror.flush(30)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert mirror.errors >= 1
    text = logs.getvalue()
    assert "W&B write failed" in text and "***" in text  # the error was logged, redacted
    captured = capfd.readouterr()
    for where, content in (("log", text), ("stdout", captured.out), ("stderr", captured.err)):
        assert KEY not in content and TOKEN not in content, where
    for path in tmp_path.rglob("*"):
        if path.is_file():  # wandb's own debug logs and settings included
            data = path.read_bytes()
            assert KEY.encode() not in data and TOKEN.encode() not in data, path
    # The runs were still written, complete.
    assert read_offline_runs(tmp_path)[f"{sweep}_trial_0003"].summary["sweep/score"] == 0.93
    log.close()


def test_no_key_in_resumed_events_or_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    sweep = "wbsecret2"
    log = Log(tmp_path / "a" / "events.db")
    mirror = make_mirror(sweep, tmp_path / "a")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mirror.run)
            for stored, state in log.append(script(sweep)[0]):
                mirror.publish(stored, state)
            assert await mirror.flush(30)
            tg.cancel_scope.cancel()

    anyio.run(main)
    log.close()
    settings = WandbSettings(mode="online", project="sweeps", entity="test-entity")
    with FakeWandbServer(KEY, entity="test-entity") as server:
        server.load_offline(tmp_path / "a", project="sweeps")
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        events = events_from_wandb(settings, sweep, tmp_path / "b")
        assert events
        for event in events:
            assert KEY not in event.model_dump_json()
        server.api_key = "some-other-valid-key-0000000000000000000000"
        with pytest.raises(WandbError) as err:
            events_from_wandb(settings, sweep, tmp_path / "b")
        assert KEY not in str(err.value) and KEY not in repr(err.value)
    captured = capfd.readouterr()
    assert KEY not in captured.out and KEY not in captured.err
