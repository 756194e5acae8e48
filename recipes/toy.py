"""A fast, deterministic stand-in for training, for tests and smoke sweeps (no training library).

    python -m orchestrator.run recipes.toy.train --args run=t1 --overrides toy.x=0.3 toy.lr=0.003
    python -m orchestrator.run recipes.toy.evaluate --args policy_uri=file://./train_dir/t1/checkpoints

``train`` "trains" for ``toy.steps`` steps (sleeping ``toy.step_seconds`` each), printing progress lines and
writing ``train_dir/<run>/checkpoints/model_<step>.json``; ``evaluate`` reads the newest checkpoint and reports a
score that is a smooth function of the hyperparameters (see ``toy_score``): best at x=0.5, y=-0.25, lr=3e-3 and
a large total_timesteps, which also costs more (cost = total_timesteps / 1000 simulated seconds).

With ``toy.report=true`` the train job also reports a learning curve for early stopping, one
``SWEEP_REPORT {"step": <epoch>, "score": toy_score x epoch/steps}`` line per step.

A job can misbehave on purpose: ``toy.fail_mode`` picks how, ``toy.fail_in`` which job (``train`` or ``eval``).
The checkpoint records the train config, so ``toy.fail_in=eval`` set on the train job reaches its eval job too
(the eval job's own overrides win over the recorded ones).

=================  ==========================================================================================
fail_mode          what the job does
=================  ==========================================================================================
none               behaves
exit               exits with ``toy.exit_code`` (default 3), after the first progress line in train
crash              raises before printing anything (a traceback on stderr, exit code 1)
hang               sleeps ``toy.hang_seconds`` (default an hour), after the first progress line in train
kill               kills itself with SIGKILL, after the first progress line in train
flaky              fails (``toy.exit_code``) the first time it runs for this run, behaves on later attempts
no_result          exits 0 without a SWEEP_RESULT line
malformed_result   prints ``SWEEP_RESULT {not json`` and exits 0
nan_score          reports score NaN (``inf_score``: +inf; ``string_score``: "high")
no_checkpoint      train writes no checkpoint (so its eval fails: exit 1, "no checkpoint ...")
=================  ==========================================================================================
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from recipes.common import (
    ProgressPrinter,
    RunName,
    Section,
    checkpoint_dir,
    checkpoint_name,
    latest_checkpoint,
    policy_path,
    report_intermediate,
    write_atomic,
)

FailMode = Literal[
    "none",
    "exit",
    "crash",
    "hang",
    "kill",
    "flaky",
    "no_result",
    "malformed_result",
    "nan_score",
    "inf_score",
    "string_score",
    "no_checkpoint",
]


class ToyKnobs(Section):
    x: float = Field(0.0, description="searched; best at 0.5")
    y: float = Field(0.0, description="searched; best at -0.25")
    lr: float = Field(1e-3, gt=0, description="searched; best at 3e-3 (log scale)")
    total_timesteps: int = Field(10_000, gt=0, description="more scores higher and costs more (simulated)")
    steps: int = Field(5, ge=1, description="progress steps the train job takes")
    step_seconds: float = Field(0.02, ge=0, description="sleep per step")
    cost: float | None = Field(None, description="reported cost; default total_timesteps / 1000")
    note: str = Field("", description="echoed back in the result's metrics (for tests)")
    report: bool = Field(False, description="print a SWEEP_REPORT each step: toy_score x the fraction trained")
    fail_mode: FailMode = "none"
    fail_in: Literal["train", "eval"] = Field("train", description="which job the fail_mode applies to")
    exit_code: int = Field(3, ge=1, le=255, description="exit code for fail_mode=exit or flaky")
    hang_seconds: float = Field(3600.0, ge=0, description="sleep for fail_mode=hang")


class ToyConfig(Section):
    toy: ToyKnobs = ToyKnobs()


def toy_score(k: ToyKnobs) -> float:
    """Smooth in every searched value, at most 1.0."""
    return (
        1.0
        - 0.25 * (k.x - 0.5) ** 2
        - 0.25 * (k.y + 0.25) ** 2
        - 0.2 * math.log10(k.lr / 3e-3) ** 2
        - 0.3 * math.exp(-k.total_timesteps / 20_000)
    )


def _misbehave_early(k: ToyKnobs, phase: str, run_dir: Path) -> None:
    """Failures that happen before the job's work."""
    if k.fail_in != phase:
        return
    if k.fail_mode == "crash":
        raise RuntimeError(f"toy {phase} crashed on purpose (toy.fail_mode=crash)")
    if k.fail_mode == "flaky":
        marker = run_dir / f".flaky_{phase}"
        if not marker.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text("failed once\n")
            print(f"toy {phase}: failing this first attempt on purpose (toy.fail_mode=flaky)", file=sys.stderr)
            sys.exit(k.exit_code)


def _misbehave_midway(k: ToyKnobs, phase: str) -> None:
    """Failures after the first progress line."""
    if k.fail_in != phase:
        return
    sys.stdout.flush()
    if k.fail_mode == "exit":
        print(f"toy {phase}: exiting with {k.exit_code} on purpose (toy.fail_mode=exit)", file=sys.stderr)
        sys.exit(k.exit_code)
    if k.fail_mode == "hang":
        time.sleep(k.hang_seconds)
    if k.fail_mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _finish(k: ToyKnobs, phase: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """The job's result, corrupted on purpose if asked."""
    if k.fail_in != phase:
        return result
    mode = k.fail_mode
    if mode == "no_result":
        return None
    if mode == "malformed_result":
        print("SWEEP_RESULT {not json", flush=True)
        return None
    if mode in ("nan_score", "inf_score", "string_score"):
        result["score"] = {"nan_score": math.nan, "inf_score": math.inf, "string_score": "high"}[mode]
    return result


def train(run: RunName, config: ToyConfig = ToyConfig(), train_dir: str = "train_dir") -> dict[str, Any] | None:
    """Pretend to train: progress lines, then a JSON checkpoint under <train_dir>/<run>/checkpoints."""
    k = config.toy
    ckpt_dir = checkpoint_dir(train_dir, run)
    _misbehave_early(k, "train", ckpt_dir.parent)
    start = time.monotonic()
    progress = ProgressPrinter(total=k.total_timesteps, interval=0.0)
    for epoch in range(1, k.steps + 1):
        time.sleep(k.step_seconds)
        progress.update(epoch, k.total_timesteps * epoch / k.steps)
        if k.report:
            report_intermediate(epoch, toy_score(k) * epoch / k.steps)
        if epoch == 1:
            _misbehave_midway(k, "train")
    if not (k.fail_in == "train" and k.fail_mode == "no_checkpoint"):
        payload = {"run": run, "step": k.total_timesteps, "config": config.model_dump(mode="json")}
        write_atomic(ckpt_dir / checkpoint_name(k.total_timesteps, ".json"), json.dumps(payload, indent=2))
    cost = k.cost if k.cost is not None else k.total_timesteps / 1000
    metrics = {"train/steps": k.steps, "train/seconds": round(time.monotonic() - start, 4), "toy/note": k.note}
    return _finish(k, "train", {"cost": cost, "metrics": metrics})


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def evaluate(policy_uri: str, run: RunName | None = None, config: ToyConfig = ToyConfig()) -> dict[str, Any] | None:
    """Read the newest toy checkpoint and report its score (the train config, under this job's overrides)."""
    ckpt = latest_checkpoint(policy_path(policy_uri), ".json")
    saved = json.loads(ckpt.read_text())
    # What this eval job was given explicitly wins over what the train job recorded.
    merged = ToyConfig.model_validate(_deep_merge(saved.get("config", {}), config.model_dump(exclude_unset=True)))
    k = merged.toy
    _misbehave_early(k, "eval", ckpt.parent.parent)
    _misbehave_midway(k, "eval")
    cost = k.cost if k.cost is not None else k.total_timesteps / 1000
    metrics = {"eval/checkpoint": ckpt.name, "eval/run": run or saved.get("run"), "toy/note": k.note}
    return _finish(k, "eval", {"score": toy_score(k), "cost": cost, "metrics": metrics})
