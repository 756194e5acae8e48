"""The commands on a terminal and in a pipe: a reader that stops early (``| head -1``) ends them quietly, and a job's
escape sequences are shown, never obeyed. Real commands in real shell pipelines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stores.sqlite import SQLiteStore
from tests.conftest import long_sweep, run_orchestrator, serve_env
from tests.fakes.sweeps import stored
from tests.test_poison_results import SERVE_ARGS, SWEEP

SIGPIPE_EXIT = 141
NOISE = ("Traceback", "BrokenPipeError", "Exception ignored")


def piped_into_head(cwd: Path, command: str, **env: str) -> tuple[int, str, str]:
    """``python -m orchestrator <command> | head -1``: the command's exit status, head's output, its stderr."""
    proc = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m orchestrator {command} 2>cmd.err | head -1; exit ${{PIPESTATUS[0]}}"],
        cwd=cwd,
        env=serve_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, (cwd / "cmd.err").read_text()


def test_status_and_attach_piped_into_head_end_quietly(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "train_dir" / "big" / "events.db")
    store.append(long_sweep(3000, "big"))  # far more output than a pipe holds
    store.close()
    for command, first in (
        ("status --sweep big --all", "Sweep big: finished"),
        ("attach --sweep big", "[SweepOrchestrator] Starting sweep big"),
    ):
        code, out, err = piped_into_head(tmp_path, command)
        assert code == SIGPIPE_EXIT and out.startswith(first), (command, code, out, err)
        assert not any(word in err for word in NOISE), err


def test_serve_piped_into_head_ends_quietly_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "sweep.toml").write_text(SWEEP)
    (tmp_path / "stdout.bin").write_text('SWEEP_RESULT {"score": 0.5}\n')
    env = {"ECHO_STDOUT": str(tmp_path / "stdout.bin")}
    code, out, err = piped_into_head(tmp_path, "serve --sweep poison --config sweep.toml --log-format human", **env)
    assert code == SIGPIPE_EXIT and out.startswith("[SweepOrchestrator]"), (code, out, err)
    assert not any(word in err for word in NOISE), err
    again = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", "--sweep", "poison", "--log-format", "json"],
        cwd=tmp_path,
        env=serve_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    state, _ = stored(tmp_path, "poison")
    assert state.finished and [t.status for t in state.shown_trials()] == ["completed"]


def test_job_output_escape_sequences_are_shown_not_obeyed(tmp_path: Path) -> None:
    (tmp_path / "sweep.toml").write_text(SWEEP)
    hostile = "clear\x1b[2J\x1b]0;owned\x07 back\b bidi\u202eevil\x9b31m"  # (a CR ends a line: progress bars)
    (tmp_path / "stdout.bin").write_bytes(
        (hostile + "\n" + "SWEEP_RESULT " + json.dumps({"score": 0.5}) + "\n").encode()
    )
    proc = run_orchestrator(
        tmp_path, *SERVE_ARGS, "human", timeout=120, text=False, ECHO_STDOUT=str(tmp_path / "stdout.bin")
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    out = proc.stdout.decode()
    assert "clear\\x1b[2J\\x1b]0;owned\\x07 back\\x08 bidi\\u202eevil\\x9b31m" in out
    for raw in ("\x1b", "\x07", "\b", "\u202e", "\x9b"):
        assert raw not in out, repr(raw)
