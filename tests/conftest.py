from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEDGER_JOB = ROOT / "tests" / "jobs" / "ledger_job.py"

SWEEP_TOML = """
max_trials = {max_trials}
max_parallel_jobs = {parallel}
monitoring_interval = 60
recipe_module = "toy"
command = ["{python}", "{job}"]
retry_backoff = 0.1
seed = 7

[protein_config]
metric = "score"
method = "{method}"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = -1.0
max = 1.0

[protein_config.parameters."toy.lr"]
distribution = "log_normal"
min = 1e-4
max = 1e-1

[protein_config.settings]
num_random_samples = 2
"""


@pytest.fixture
def sweep_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a ledger, for sweeps that run tests/jobs/ledger_job.py."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger.txt"))
    return tmp_path


def write_sweep(path: Path, max_trials: int = 4, parallel: int = 2, method: str = "random") -> Path:
    path.write_text(
        SWEEP_TOML.format(max_trials=max_trials, parallel=parallel, method=method, python=sys.executable, job=LEDGER_JOB)
    )
    return path


def ledger(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def serve_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
