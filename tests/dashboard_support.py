"""What the dashboard's tests and benchmark share: Debian's Chromium under Playwright, a sweep whose jobs hold at a
gate until the test opens it, and a long sweep's log written directly with the real events and SQLite store."""

from __future__ import annotations

import math
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import SWEEP_TOML

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# A train job prints a progress line every 0.2 s until <gates>/<run> exists; its eval scores -(x - 0.3)^2 at a
# cost of the trial's number (so score against cost has a front to draw).
GATED_JOB = """
import json, os, sys, time
entry, rest = sys.argv[1], sys.argv[2:]
values = dict(a.split("=", 1) for a in rest if "=" in a)
run = values["run"]
ckpt = os.path.join("train_dir", run, "checkpoints")
if entry.endswith("evaluate"):
    params = json.load(open(os.path.join(ckpt, "params.json")))
    x = float(params.get("toy.x", 0.0))
    print("SWEEP_RESULT " + json.dumps({{"score": -((x - 0.3) ** 2), "cost": float(run[-4:])}}), flush=True)
    sys.exit(0)
i = 0
# A gate of its own, or the one every job leaves by when its test ends (and never longer than 5 minutes).
gates = [os.path.join({gates!r}, run), os.path.join({gates!r}, "_all")]
while not any(os.path.exists(g) for g in gates) and i < 1500:
    i += 1
    print(f"Epoch {{i}} / 1000 sps / {{min(i, 99):.2f}}% of 100.00 ksteps", flush=True)
    time.sleep(0.2)
os.makedirs(ckpt, exist_ok=True)
json.dump(values, open(os.path.join(ckpt, "params.json"), "w"))
"""


def write_gated_sweep(root: Path, trials: int, parallel: int = 2) -> Path:
    """``root/sweep.toml`` and its job; jobs of run R hold until ``root/gates/R`` exists."""
    (root / "gates").mkdir(parents=True, exist_ok=True)
    job = root / "gated_job.py"
    job.write_text(textwrap.dedent(GATED_JOB.format(gates=str(root / "gates"))))
    toml = root / "sweep.toml"
    toml.write_text(
        SWEEP_TOML.format(max_trials=trials, parallel=parallel, method="random", python=sys.executable, job=job)
    )
    return toml


def write_long_sweep(root: Path, name: str, trials: int, extra_trials: int = 1, stop_every: int = 0) -> Path:
    """The log of ``trials`` ended trials (every seventh failed, every ``stop_every``-th other one stopped early),
    written with the real event types into the real SQLite store, under a definition that allows ``extra_trials``
    more with the gated job: ``serve`` resumes it and runs those at once, so the dashboard is a live sweep's.
    Returns the sweep's directory."""
    from orchestrator import events as ev
    from orchestrator.config import load_config
    from stores.sqlite import SQLiteStore

    toml = write_gated_sweep(root, trials + extra_trials, parallel=extra_trials)
    config = load_config(toml, {"sweep_name": name, "train_dir": str(root / "train_dir")})
    rng = random.Random(1)
    store = SQLiteStore(config.sweep_dir / "events.db")
    try:
        batch: list[Any] = [ev.SweepCreated(sweep=name, config=config.public_dict())]
        for n in range(1, trials + 1):
            run = f"{name}_trial_{n:04d}"
            x, lr = rng.uniform(-1, 1), 10 ** rng.uniform(-4, -1)
            train, evaluate = f"{run}.train.1", f"{run}.eval.1"
            batch += [
                ev.TrialSuggested(trial=n, run=run, params={"toy.x": x, "toy.lr": lr}, info={"source": "random"}),
                ev.JobRequested(key=train, trial=n, kind="train", argv=["train", run]),
                ev.JobSubmitted(key=train, handle={"pid": 1}),
                ev.JobStarted(key=train),
                ev.JobProgress(key=train, step=50_000, total=100_000, sps=1000),
                ev.JobExited(key=train, exit_code=0, duration=2.0),
            ]
            if n % 7 == 0:
                batch.append(ev.TrialFailed(trial=n, reason="train job failed: exit code 3"))
            elif stop_every and n % stop_every == 0:
                batch[-1] = ev.TrialStopRequested(trial=n, step=50_000, reason="asha at rung 1 (step 5e+04): test")
                batch += [
                    ev.JobExited(key=train, exit_code=-15, duration=2.0),
                    ev.TrialStopped(trial=n, score=-1.0, step=50_000, cost=2.0),
                ]
            else:
                score = -((x - 0.3) ** 2) - 0.1 * abs(math.log10(lr) + 3)
                batch += [
                    ev.JobRequested(key=evaluate, trial=n, kind="eval", argv=["eval", run]),
                    ev.JobExited(key=evaluate, exit_code=0, duration=0.5, result={"score": score}),
                    ev.TrialCompleted(trial=n, score=score, cost=2.5 + 10 * rng.random()),
                ]
            if len(batch) > 5000:
                store.append(batch)
                batch = []
        store.append(batch)
    finally:
        store.close()
    return config.sweep_dir
