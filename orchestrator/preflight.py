"""Preflight: before the first trial, check what would make every trial fail, and refuse to start (exit 2).

- Jobs that run the project's runner (``python -m orchestrator.run``): the first trial's train and eval command
  lines go through the runner's own validation (``orchestrator.run.check_command``, what its ``--dry-run`` does:
  the recipe is imported and every argument and override checked; nothing runs). Its message names the field.
- Dispatchers that can check their own setup offer ``preflight()`` (SkyPilot: a cloud is enabled).
"""

from __future__ import annotations

import re

import anyio

from dispatchers.base import DispatcherError
from dispatchers.registry import build_dispatcher
from optimizers.spaces import Space
from orchestrator.core.config import ConfigError, SweepConfig
from orchestrator.core.jobs import job_key, run_name
from orchestrator.core.runner import PROG, UsageError, check_command
from orchestrator.core.scheduler import make_scheduler
from orchestrator.core.state import JobState, TrialState, freeze

RUNNER = "orchestrator.run"
_NAMED = re.compile(r"(?:override|argument|config at) '([^']+)'")


def first_trial(config: SweepConfig) -> TrialState:
    """The sweep's first trial as serve would suggest it: the search center."""
    space = Space(config.protein_config.parameters)
    return TrialState(1, run_name(config.sweep_name, 1), freeze(space.decode(space.center())))


def first_job(config: SweepConfig, kind: str, dispatcher: str) -> tuple[TrialState, JobState]:
    trial = first_trial(config)
    scheduler = make_scheduler(config)
    argv = scheduler.train_argv(trial) if kind == "train" else scheduler.eval_argv(trial)
    return trial, JobState(job_key(trial.run, kind, 1), 1, kind, 1, tuple(argv), dispatcher)


def _runner_args(config: SweepConfig, argv: tuple[str, ...]) -> list[str] | None:
    """The runner's own arguments in a job's argv, or None when the job does not run the project's runner."""
    prefix = config.argv_prefix()
    if prefix[-2:] != ["-m", RUNNER]:
        return None
    return list(argv[len(prefix) :])


def _field(config: SweepConfig, kind: str, message: str) -> str:
    """The sweep field behind the runner's complaint: the override or parameter it names, else the likely one."""
    overrides = config.train_overrides if kind == "train" else config.eval_overrides
    where = "train_overrides" if kind == "train" else "eval_overrides"
    if message.startswith(("unknown module", "expected a recipe")):
        return "recipe_module"
    if message.startswith("module "):
        return "train_entrypoint" if kind == "train" else "eval_entrypoint"
    named = _NAMED.search(message)
    key = named.group(1) if named else ""
    for candidate in (key, *(k for k in [*overrides, *config.protein_config.parameters] if k.startswith(key + "."))):
        if candidate and candidate in overrides:
            return f"{where}.{candidate}"
        if candidate and kind == "train" and candidate in config.protein_config.parameters:
            return f"protein_config.parameters.{candidate}"
    return where


def check_command_lines(config: SweepConfig) -> list[str]:
    """The runner's verdict on the first trial's train and eval command lines; ConfigError on a usage error."""
    notes = []
    for kind in ("train", "eval"):
        _, job = first_job(config, kind, "preflight")
        args = _runner_args(config, job.argv)
        if args is None:
            return [f"preflight: jobs run {' '.join(config.command)!r}, not {RUNNER}: command lines not checked"]
        try:
            check_command(args)
        except UsageError as exc:
            entry = config.train_entrypoint if kind == "train" else config.eval_entrypoint
            hint = (
                ""
                if "--help" in str(exc)
                else f"\n  (what the recipe takes: {PROG} {config.recipe_module}.{entry} --help)"
            )
            raise ConfigError(
                f"{_field(config, kind, str(exc))}: preflight: every {kind} job (recipe_module {config.recipe_module}) "
                f"would fail with\n"
                f"  {PROG}: error: {exc}{hint}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - e.g. the recipe's own imports exist only where jobs run
            notes.append(f"preflight: {kind} command line not checked here ({type(exc).__name__}: {exc})")
            continue
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
            raise ConfigError(f"dispatcher_type: preflight of {name!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - it could not even ask (say, its API server is unreachable)
            raise ConfigError(
                f"dispatcher_type: preflight of {name!r} could not check its setup: {type(exc).__name__}: {exc}"
            ) from None
    return notes


def preflight(config: SweepConfig) -> list[str]:
    """Every check; ConfigError (exit 2, no trial spent) on the first that fails. Returns what was checked."""
    return check_command_lines(config) + check_dispatchers(config)
