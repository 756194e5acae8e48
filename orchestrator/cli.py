"""The command line: ``python -m orchestrator serve|status ...``.

Every user mistake ends in one message that names the field and the fix, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.config import (
    ConfigError,
    SweepConfig,
    WandbSettings,
    config_path_for,
    load_config,
    merge_tree,
    parse_assignments,
)
from orchestrator.core.events import SweepCreated
from stores.base import StoreError
from stores.factory import event_log_path

_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # as SweepConfig.sweep_name
EXIT_OK = 0
EXIT_NO_TRIAL = 1  # the sweep finished but no trial completed
EXIT_USAGE = 2
EXIT_LEASE = 3
EXIT_STORE = StoreError.exit_code  # the event log is damaged, read-only or on a full disk
EXIT_STOPPED = 5  # a doomed sweep: max_consecutive_failures trials in a row failed for the same reason
EXIT_INTERRUPTED = 130


def _sweep_args(p: argparse.ArgumentParser, runs: bool = False) -> None:
    if runs:
        p.add_argument(
            "--sweep",
            required=True,
            metavar="DEFINITION",
            help="the sweep definition configs/DEFINITION.toml; the sweep is named DEFINITION unless "
            "--args sweep_name=NAME names it",
        )
    else:
        p.add_argument("--sweep", required=True, metavar="NAME", help="the sweep's name (its sweep_name)")
    p.add_argument("--train-dir", default=None, metavar="DIR", help="where sweeps live (default: train_dir)")


def _definition_args(p: argparse.ArgumentParser) -> None:
    """What serve and dryrun share: the definition and its changes on the command line."""
    _sweep_args(p, runs=True)
    p.add_argument("--config", type=Path, help="sweep definition (TOML); default configs/DEFINITION.toml")
    p.add_argument(
        "--args", nargs="*", default=[], metavar="K=V", help="sweep fields, e.g. sweep_name=my_sweep max_trials=5"
    )
    p.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        metavar="K=V",
        help="any field by dotted path, e.g. dispatcher_type=local train_overrides.trainer.total_timesteps=20000",
    )


def _follow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="if serve is not running, wait for it")
    p.add_argument("--no-history", dest="history", action="store_false", help="without serve, skip the stored log")
    p.add_argument("--token", default=None, help="serve's http_token (default: $SWEEP_HTTP_TOKEN)")
    p.add_argument("--url", default=None, help="serve's address, instead of <sweep dir>/endpoint.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator",
        description="Run, resume and follow hyperparameter sweeps (Protein on BoTorch).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run a sweep, or resume it where its event log stands",
        description="Run or resume a sweep. Safe to kill at any moment: the same command resumes it. "
        "Before the first trial a preflight checks the jobs' command lines against the recipe (and, on SkyPilot, "
        "that a cloud is enabled).",
        epilog="examples:\n"
        "  python -m orchestrator serve --sweep quick_test\n"
        "  python -m orchestrator serve --sweep quick_test --args sweep_name=my_test_sweep max_trials=5\n"
        "  python -m orchestrator serve --sweep ppo_arena --args sweep_name=arena1 "
        "--overrides train_overrides.trainer.total_timesteps=20000\n\n"
        f"exit codes: {EXIT_OK} the sweep finished with at least one completed trial; {EXIT_NO_TRIAL} it finished "
        f"with none; {EXIT_USAGE} bad input or a failed preflight (nothing run); {EXIT_LEASE} another serve holds "
        f"the sweep; {EXIT_STORE} the event log is damaged, read-only or on a full disk; "
        f"{EXIT_STOPPED} stopped: max_consecutive_failures trials in a row failed for the same reason "
        f"(fix it, then run the same command); {EXIT_INTERRUPTED} interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _definition_args(serve)
    serve.add_argument("--log-format", choices=["auto", "human", "json"], default="auto")

    dryrun = sub.add_parser(
        "dryrun",
        help="run the preflight and hand the sweep's first job to its dispatcher's dry run (SkyPilot: sky.launch "
        "dryrun); takes the same --args/--overrides as serve",
    )
    _definition_args(dryrun)
    dryrun.add_argument("--kind", choices=["train", "eval"], default="train")

    status = sub.add_parser("status", help="print the trial table from the sweep's event log")
    _sweep_args(status)
    status.add_argument("--follow", "--live", action="store_true", help="keep the table live from serve's stream")
    status.add_argument("--interval", type=float, default=None, metavar="S", help="seconds between tables off a TTY")
    status.add_argument(
        "--all", action="store_true", help="list every trial, not only those in flight and the last 50 ended"
    )
    status.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="csv/json: every trial, one column per parameter",
    )
    _follow_args(status)

    attach = sub.add_parser(
        "attach",
        help="follow a running sweep's events from another terminal",
        description="Print the sweep's lines from the start (or --since), then follow live; exit 0 when it finishes.",
    )
    _sweep_args(attach)
    attach.add_argument("--since", type=int, default=0, metavar="SEQ", help="print only events after this seq")
    attach.add_argument("--json", action="store_true", help="raw events, one JSON object a line")
    _follow_args(attach)

    report = sub.add_parser("report", help="write the sweep's charts and trial table as one offline HTML file")
    _sweep_args(report)
    report.add_argument("--out", type=Path, default=None, metavar="FILE", help="default: <sweep dir>/report.html")
    return parser


def _exists(path: Path, field: str) -> bool:
    """``path.exists()``, with a path the system cannot even look up (a NUL byte, a name over 255 bytes) as a
    ConfigError naming ``field``."""
    try:
        return path.exists()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{field}: cannot use {str(path)[:200]!r}: {reason}") from None


def check_sweep_name(name: Any, how: str) -> str:
    """A sweep's name names files and W&B groups: refuse anything else before a path is built from it."""
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)  # --args sweep_name=2024 reads as a number
    if not isinstance(name, str) or not _SWEEP_NAME.fullmatch(name):
        raise ConfigError(
            f"sweep_name: use letters, digits, '.', '_' and '-' only, at most 128, starting with a letter or digit "
            f"(got {how}{name!r})"
        )
    return name


def command_assignments(ns: argparse.Namespace) -> dict[str, Any]:
    """``--args`` then ``--overrides`` (a later one wins), as one nested dict."""
    return merge_tree(parse_assignments(ns.args, "--args"), parse_assignments(ns.overrides, "--overrides"))


def resolve_config(
    definition: str, config_file: Path | None, assignments: dict[str, Any], train_dir: str | None
) -> tuple[SweepConfig, Path]:
    """The sweep's definition: the stored one when the sweep exists (plus command-line changes), else the file
    configs/DEFINITION.toml (or ``config_file``). The sweep is named ``sweep_name`` if given, else DEFINITION. A new
    sweep's random seed is part of the definition it records, so a resume proposes what it would have."""
    sweep = check_sweep_name(assignments.get("sweep_name", definition), "--args sweep_name=")
    assignments = {**assignments, "sweep_name": sweep}
    if train_dir:
        assignments["train_dir"] = train_dir
    file = config_file or config_path_for(definition)
    from_file = load_config(file, assignments) if file else None
    root = Path(assignments.get("train_dir") or (from_file.train_dir if from_file else "train_dir"))
    db = event_log_path(root / sweep)
    stored = _stored_definition(db)
    if stored is None and (assignments.get("store") or (from_file and from_file.store)) == "wandb":
        wandb = from_file.wandb if from_file else WandbSettings(**assignments.get("wandb", {}))
        stored = _restore_from_wandb(wandb, sweep, db)
    if stored is not None:
        return load_config(None, assignments, base=stored), db
    if from_file is None:
        raise ConfigError(
            f"no sweep named {sweep!r}: there is no configs/{definition}.toml and nothing stored in {root / sweep}; "
            "pass --config FILE"
        )
    return from_file, db


def _stored_definition(db: Path) -> dict[str, Any] | None:
    """The definition a sweep was created with, from its local event log; None when there is none."""
    from stores.factory import open_store

    if not _exists(db, "train_dir"):
        return None
    store = open_store(db)
    try:
        first = next(store.read(0), None)
    finally:
        store.close()
    return first.event.config if first is not None and isinstance(first.event, SweepCreated) else None


def _restore_from_wandb(wandb: WandbSettings, sweep: str, db: Path) -> dict[str, Any] | None:
    """A new machine: rebuild the local log from the sweep's W&B group, then go on as if it had always been here."""
    from stores.factory import open_store
    from stores.wandb import restore_log_from_wandb
    from stores.wandb_client import WandbError

    store = open_store(db)
    try:
        restored = restore_log_from_wandb(wandb, sweep, store, "train_dir")
    except WandbError as exc:
        raise ConfigError(f"cannot resume {sweep!r} from W&B: {exc}") from None
    finally:
        store.close()
    if restored:
        print(f"[SweepOrchestrator] Rebuilt {len(restored)} events of sweep {sweep} from W&B", flush=True)
    return _stored_definition(db)


def cmd_serve(ns: argparse.Namespace) -> int:
    import anyio

    from orchestrator.logs import configure_logging
    from orchestrator.preflight import preflight
    from orchestrator.runtime import build_service
    from stores.base import LeaseHeld

    config, db = resolve_config(ns.sweep, ns.config, command_assignments(ns), ns.train_dir)
    fmt = configure_logging(ns.log_format)
    for line in preflight(config):
        print(f"[SweepOrchestrator] {line}", flush=True)
    try:
        service = build_service(config, db, log_format=fmt)
    except OSError as exc:  # e.g. train_dir on a read-only or missing mount
        raise ConfigError(f"train_dir: cannot create the sweep's event log {db}: {exc.strerror or exc}") from None
    resume = f"python -m orchestrator serve --sweep {ns.sweep}" + (
        f" --args sweep_name={config.sweep_name}" if config.sweep_name != ns.sweep else ""
    )

    async def serve() -> Any:
        # Not anyio.run(service.run): asyncio reprs the main task (and so its result, the final state: seconds for
        # a 10,000-trial sweep) when it restores the SIGINT handler.
        return await service.run()

    try:
        state = anyio.run(serve)
    except LeaseHeld as held:
        print(
            f"error: sweep {config.sweep_name!r} is already being served by {held}. "
            f"Follow it with: python -m orchestrator attach --sweep {config.sweep_name}",
            file=sys.stderr,
        )
        return EXIT_LEASE
    except KeyboardInterrupt:
        print(f"\n[SweepOrchestrator] interrupted; running jobs keep running. Resume with: {resume}", flush=True)
        return EXIT_INTERRUPTED
    if state.stopped:
        print(f"error: sweep {config.sweep_name!r} stopped: {state.stopped}", file=sys.stderr)
        print(f"Fix the cause, then resume with: {resume}", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_OK if state.completed else EXIT_NO_TRIAL


def cmd_dryrun(ns: argparse.Namespace) -> int:
    from orchestrator.dryrun import dry_run_report

    config, _ = resolve_config(ns.sweep, ns.config, command_assignments(ns), ns.train_dir)
    dry_run_report(config, ns.kind, lambda line: print(line, flush=True))
    return 0


def cmd_status(ns: argparse.Namespace) -> int:
    if ns.follow and ns.format != "table":
        raise ConfigError(f"--format {ns.format} exports every trial once; it does not go with --follow (drop one)")
    if ns.follow:
        from orchestrator.attach import cmd_status_follow

        return cmd_status_follow(ns)
    from orchestrator.core.history import all_trials
    from orchestrator.core.reducer import fold
    from orchestrator.render import headline, trial_table
    from stores.factory import open_store

    db = _existing_log(ns)
    if ns.format != "table":
        from orchestrator.export import export

        sys.stdout.write(export(db, ns.format))
        return 0
    store = open_store(db)
    trials = None
    try:
        if ns.all:
            state, trials = all_trials(s.event for s in store.read(0))
        else:
            state = fold(s.event for s in store.read(0))
    finally:
        store.close()
    from orchestrator.attach import serve_is_running

    print(headline(state, serving=serve_is_running(db.parent)))
    print(trial_table(state, trials=trials))
    return 0


def _existing_log(ns: argparse.Namespace) -> Path:
    db = event_log_path(Path(ns.train_dir or "train_dir") / ns.sweep)
    if not _exists(db, "--train-dir"):
        raise ConfigError(f"no sweep named {ns.sweep!r} under {db.parent.parent}/ (is --train-dir right?)")
    return db


def cmd_report(ns: argparse.Namespace) -> int:
    from orchestrator.report import write_report

    out = write_report(_existing_log(ns), ns.out)
    print(f"[SweepOrchestrator] Report of sweep {ns.sweep}: {out}", flush=True)
    return 0


def cmd_attach(ns: argparse.Namespace) -> int:
    from orchestrator.attach import cmd_attach as attach

    return attach(ns)


COMMANDS = {"serve": cmd_serve, "dryrun": cmd_dryrun, "status": cmd_status, "attach": cmd_attach, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        check_sweep_name(ns.sweep, "--sweep ")  # it names files: check it before any path is built from it
        return COMMANDS[ns.command](ns)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
