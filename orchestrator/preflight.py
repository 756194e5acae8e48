"""Preflight: before the first trial, check what would make every trial fail, and refuse to start (exit 2).

- Jobs that run the project's runner (``python -m orchestrator.run``): the first trial's train and eval command
  lines go through the runner's own validation (``--dry-run``: the recipe is imported and every argument and
  override checked, nothing runs). Its one-line message names the field.
- Dispatchers that can check their own setup offer ``preflight()`` (SkyPilot: a cloud is enabled).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import anyio

from dispatchers.registry import DispatcherError, build_dispatcher
from optimizers.spaces import Space
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.jobs import job_key
from orchestrator.scheduler import make_scheduler, run_name
from orchestrator.state import JobState, TrialState, freeze

RUNNER = "orchestrator.run"
CHECK_TIMEOUT = 120.0  # seconds for the runner to import a recipe and check one command line


def first_trial(config: SweepConfig) -> TrialState:
    """The sweep's first trial as serve would suggest it: the search center."""
    space = Space(config.protein_config.parameters)
    return TrialState(1, run_name(config.sweep_name, 1), freeze(space.decode(space.center())))


def first_job(config: SweepConfig, kind: str, dispatcher: str) -> tuple[TrialState, JobState]:
    trial = first_trial(config)
    scheduler = make_scheduler(config)
    argv = scheduler.train_argv(trial) if kind == "train" else scheduler.eval_argv(trial)
    return trial, JobState(job_key(trial.run, kind, 1), 1, kind, 1, tuple(argv), dispatcher)


def runs_the_runner(config: SweepConfig) -> bool:
    return any(part == RUNNER or part.replace(os.sep, "/").endswith("orchestrator/run.py") for part in config.command)


def check_command_lines(config: SweepConfig) -> list[str]:
    """The runner's verdict on the first trial's train and eval command lines; ConfigError on a usage error."""
    if not runs_the_runner(config):
        return [f"preflight: jobs run {' '.join(config.command)!r}, not the project's runner: command lines not checked"]
    if importlib.util.find_spec(config.recipe_module.split(".")[0]) is None:
        return [f"preflight: recipe {config.recipe_module} is not importable here: command lines not checked"]
    notes = []
    for kind in ("train", "eval"):
        _, job = first_job(config, kind, "preflight")
        argv = [*job.argv, "--dry-run"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            notes.append(f"preflight: checking the {kind} command line took over {CHECK_TIMEOUT:g} s: not checked")
            continue
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            message = lines[-1] if lines else f"exit code {done.returncode}"
            field = "train_overrides" if kind == "train" else "eval_overrides"
            entry = config.train_entrypoint if kind == "train" else config.eval_entrypoint
            raise ConfigError(
                f"preflight: the {kind} jobs' command line fails the recipe's check, so every trial would fail:\n"
                f"  {message}\n"
                f"  (check {field}, protein_config.parameters and recipe_module: "
                f"python -m orchestrator.run {config.recipe_module}.{entry} --help lists what the recipe takes)"
            )
        notes.append(f"preflight: {kind} command line checked against {config.recipe_module}")
    return notes


def check_dispatchers(config: SweepConfig) -> list[str]:
    """Each dispatcher the jobs go to checks its own setup, if it can (SkyPilot: an enabled cloud)."""
    try:
        router = build_dispatcher(config.dispatcher_type, config.dispatcher_options)
    except DispatcherError as exc:
        raise ConfigError(str(exc)) from None
    notes: list[str] = []
    for name in sorted({router.route("train"), router.route("eval")}):
        check = getattr(router.get(name), "preflight", None)
        if check is None:
            continue
        try:
            notes += anyio.run(check)
        except ValueError as exc:  # the dispatcher's verdict: this sweep cannot run there
            raise ConfigError(f"preflight: dispatcher {name!r}: {exc}") from None
    return notes


def preflight(config: SweepConfig) -> list[str]:
    """Every check; ConfigError (exit 2, no trial spent) on the first that fails. Returns what was checked."""
    return check_command_lines(config) + check_dispatchers(config)
