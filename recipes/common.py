"""What the recipes share: config sections, run names, checkpoint files and progress lines.

No training library is imported here, so the toy recipe (and the runner's ``--help``) stay fast.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from orchestrator.core.contract import format_progress
from orchestrator.core.contract import report_intermediate as report_intermediate  # the contract's helpers
from orchestrator.core.contract import report_result as report_result
from orchestrator.core.files import write_atomic
from orchestrator.core.recipe_values import RecipeError, UsageError

CHECKPOINT_RE = re.compile(r"^model_(\d+)\.[A-Za-z0-9]+$")
META_FILE = "meta.json"


class Section(BaseModel):
    """A part of a recipe config: unknown keys and NaN/inf values are errors; immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- runs and checkpoints ----------------------------------------------------------------------------------------


def _check_run_name(value: str) -> str:
    if not value or value in (".", "..") or any(c in value for c in "/\\\x00"):
        raise ValueError("a run name is one directory name: not empty, no '/', '\\' or NUL, not '.' or '..'")
    return value


RunName = Annotated[str, AfterValidator(_check_run_name)]


def checkpoint_dir(train_dir: str | Path, run: str) -> Path:
    """``<train_dir>/<run>/checkpoints`` (relative paths are relative to the job's working directory)."""
    return Path(train_dir) / run / "checkpoints"


def policy_path(policy_uri: str) -> Path:
    """The local path a ``policy_uri`` names: ``file://./train_dir/<run>/checkpoints``, ``file:///abs/path`` or a
    plain path (a checkpoints directory or one checkpoint file)."""
    if policy_uri.startswith("file://"):
        path = policy_uri[len("file://") :]
    elif "://" in policy_uri:
        scheme = policy_uri.split("://", 1)[0]
        raise UsageError(f"policy_uri {policy_uri!r}: scheme {scheme!r} is not supported here; use file://<path>")
    else:
        path = policy_uri
    if not path:
        raise UsageError("policy_uri names no path; expected e.g. file://./train_dir/<run>/checkpoints")
    return Path(path)


def checkpoint_name(step: int, suffix: str) -> str:
    return f"model_{step:010d}{suffix}"


def latest_checkpoint(path: Path, suffix: str) -> Path:
    """The newest checkpoint (highest step) in a checkpoints directory, or ``path`` itself if it is a file."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise RecipeError(f"no checkpoints at {path}: did the train job for this run finish?")
    found = [(int(m[1]), p) for p in path.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.suffix == suffix]
    if not found:
        raise RecipeError(f"no model_<step>{suffix} checkpoint in {path}")
    return max(found)[1]


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    write_atomic(directory / META_FILE, json.dumps(meta, indent=2, default=str))


def read_meta(checkpoint: Path) -> dict[str, Any]:
    """The ``meta.json`` next to a checkpoint ({} if there is none)."""
    try:
        return json.loads((checkpoint.parent / META_FILE).read_text())
    except (OSError, ValueError):
        return {}


# -- progress ----------------------------------------------------------------------------------------------------


class ProgressPrinter:
    """Prints the seed's progress line (``Epoch 2 / 743 sps / 2.62% of 50.00 ksteps``) at most every
    ``interval`` seconds, and always the final one."""

    def __init__(self, total: float, interval: float = 2.0):
        self.total = total
        self.interval = interval
        self.start = self._last_time = time.monotonic()
        self._last_step = 0.0
        self._last_print: float | None = None

    def update(self, epoch: int, step: float, force: bool = False) -> None:
        if force and step == self._last_step and self._last_print is not None:
            return  # this step's line is already out
        now = time.monotonic()
        due = self._last_print is None or now - self._last_print >= self.interval
        if not (force or due or step >= self.total):
            return
        elapsed = now - self._last_time
        sps = (step - self._last_step) / elapsed if elapsed > 0 else 0.0
        print(format_progress(epoch, sps, min(step, self.total), self.total), flush=True)
        self._last_print = self._last_time = now
        self._last_step = step
