"""Helpers for whole-sweep tests of dispatchers: a sweep file on the toy recipe and its folded log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOY_SWEEP = """
max_trials = {max_trials}
max_parallel_jobs = {parallel}
monitoring_interval = 60
recipe_module = "recipes.toy"
retry_backoff = 0.1
max_retries = {max_retries}
seed = 3
dispatcher_type = "{dispatcher_type}"

[train_overrides]
"toy.steps" = {steps}
"toy.step_seconds" = {step_seconds}

[protein_config]
metric = "score"
method = "random"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = -1.0
max = 1.0

[protein_config.settings]
num_random_samples = 2
"""


def write_toy_sweep(
    path: Path,
    dispatcher_type: str,
    options: str = "",
    max_trials: int = 3,
    parallel: int = 2,
    max_retries: int = 0,
    steps: int = 4,
    step_seconds: float = 0.05,
) -> Path:
    path.write_text(
        TOY_SWEEP.format(
            max_trials=max_trials,
            parallel=parallel,
            dispatcher_type=dispatcher_type,
            max_retries=max_retries,
            steps=steps,
            step_seconds=step_seconds,
        )
        + options
    )
    return path


def stored(cwd: Path, sweep: str) -> tuple[Any, list[Any]]:
    """The sweep's state folded from its log, and the raw events."""
    from orchestrator.core.reducer import fold
    from stores.sqlite import SQLiteStore

    store = SQLiteStore(cwd / "train_dir" / sweep / "events.db")
    try:
        events = [s.event for s in store.read(0)]
    finally:
        store.close()
    return fold(events), events
