"""``python -m orchestrator dryrun --sweep X``: build a sweep's first job exactly as serve would and hand it to its
dispatcher's dry run (for SkyPilot: the real ``sky.launch(..., dryrun=True)``: client, API server and optimizer
run, nothing is provisioned). Catches a bad GPU name, cloud or command before a week-long sweep starts."""

from __future__ import annotations

import anyio

from dispatchers.registry import DispatcherError, build_dispatcher
from optimizers.spaces import Space
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.jobs import job_key
from orchestrator.scheduler import make_scheduler, run_name
from orchestrator.service import job_spec
from orchestrator.state import JobState, TrialState, freeze


def dry_run(config: SweepConfig, kind: str) -> str:
    """The dispatcher's report on the first trial's ``kind`` job (at the search center)."""
    try:
        router = build_dispatcher(config.dispatcher_type, config.dispatcher_options)
        name = router.route(kind)
        dispatcher = router.get(name)
    except DispatcherError as exc:
        raise ConfigError(str(exc)) from None
    check = getattr(dispatcher, "dry_run", None)
    if check is None:
        raise ConfigError(f"{kind} jobs of this sweep go to {name!r}, which offers no dry run")
    space = Space(config.protein_config.parameters)
    trial = TrialState(1, run_name(config.sweep_name, 1), freeze(space.decode(space.center())))
    scheduler = make_scheduler(config)
    argv = scheduler.train_argv(trial) if kind == "train" else scheduler.eval_argv(trial)
    job = JobState(job_key(trial.run, kind, 1), 1, kind, 1, tuple(argv), name)
    try:
        return anyio.run(check, job_spec(config, trial, job))
    except ValueError as exc:  # the dispatcher's own verdict on the job, e.g. a missing program
        raise ConfigError(str(exc)) from None
