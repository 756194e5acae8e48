"""The W&B boundary: the few ``wandb`` calls the mirror and the resume need, in one small class.

Everything that talks to W&B goes through :class:`WandbClient`, so a test can swap it for one that fails or
stalls (an outage) and the rest of the code never imports ``wandb`` itself. The calls are synchronous and
slow (process start-up, network): callers run them in worker threads.

Errors leave this module as :class:`WandbError` with a message passed through :func:`redact`, and without the
original exception chained, so an API key that a library echoes into an error never reaches a log or a user.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Mode = Literal["offline", "online", "disabled"]

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
# W&B keys: 40 hex characters, optionally prefixed ("local-..."), or the newer "wandb_v1_..." form.
_KEY_SHAPES = re.compile(r"(?<![0-9A-Za-z])(?:[a-z]+-)?[0-9a-f]{40}(?![0-9A-Za-z])|wandb_v\d+_[0-9A-Za-z_-]{16,}")


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret-looking environment value and every W&B-key-shaped string replaced by ``***``."""
    env = os.environ if environ is None else environ
    secrets = sorted(
        (v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 8),
        key=len,
        reverse=True,
    )
    for value in secrets:
        text = text.replace(value, "***")
    return _KEY_SHAPES.sub("***", text)


class WandbError(Exception):
    """A W&B call failed (network, server, auth). The message is already redacted."""


def _fail(what: str, exc: BaseException) -> WandbError:
    return WandbError(redact(f"{what}: {type(exc).__name__}: {exc}"))


def resolve_mode(settings: Any, environ: Mapping[str, str] | None = None) -> Mode:
    """The mode the mirror really uses: as configured, except that an unset ``mode`` goes online when
    ``WANDB_API_KEY`` is in the environment (the demo is offline by default, online with a key)."""
    env = os.environ if environ is None else environ
    if settings.mode is None:
        return "online" if env.get("WANDB_API_KEY") else "offline"
    return settings.mode


@dataclass(frozen=True)
class RemoteRun:
    """One run as the W&B API returns it (the read side of resume)."""

    id: str
    name: str
    group: str | None
    job_type: str | None
    state: str  # running, finished, failed, crashed, killed, preempted, ...
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None


@dataclass
class RunHandle:
    """An open W&B run (``run`` is the ``wandb.Run``; opaque to callers)."""

    run_id: str
    run: Any


class WandbClient:
    """Write runs (init/resume with id, group, tags, config; summary; metrics; finish) and list a group's runs.

    ``root`` is where offline runs are written (``<root>/wandb/offline-run-*``): the sweep directory, so a sweep's
    W&B files live beside its event log.
    """

    def __init__(
        self,
        mode: Mode,
        project: str,
        entity: str | None = None,
        root: str | Path | None = None,
        init_timeout: float = 30.0,
    ):
        self.mode = mode
        self.project = project
        self.entity = entity
        # Absolute: wandb's writer is a separate process with its own working directory.
        self.root = Path(root).absolute() if root is not None else None
        self.init_timeout = init_timeout

    # -- write side -------------------------------------------------------------------------------------------

    def open(
        self,
        run_id: str,
        *,
        group: str,
        tags: list[str],
        config: dict[str, Any],
        job_type: str,
        name: str | None = None,
    ) -> RunHandle:
        """Create the run, or resume it when it exists (same id): safe to call again after any failure."""
        try:
            import wandb

            if self.root is not None:
                self.root.mkdir(parents=True, exist_ok=True)
            run = wandb.init(
                mode=self.mode,
                project=self.project,
                entity=self.entity,
                id=run_id,
                name=name or run_id,
                group=group,
                job_type=job_type,
                tags=[t[:64] for t in tags if t],
                config=config,
                # Offline runs cannot resume (wandb warns and starts a new file); online ones pick up the same run.
                resume="allow" if self.mode == "online" else None,
                reinit="create_new",
                dir=str(self.root) if self.root is not None else None,
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    x_disable_stats=True,
                    x_disable_meta=True,  # no argv, no environment snapshot, no host details
                    x_save_requirements=False,
                    disable_git=True,
                    disable_code=True,
                    init_timeout=self.init_timeout,
                ),
            )
        except BaseException as exc:  # wandb raises a mix of types; KeyboardInterrupt still propagates
            if not isinstance(exc, Exception):
                raise
            raise _fail(f"wandb.init({run_id})", exc) from None
        return RunHandle(run_id, run)

    def update_config(self, handle: RunHandle, config: dict[str, Any]) -> None:
        try:
            handle.run.config.update(config, allow_val_change=True)
        except Exception as exc:  # noqa: BLE001
            raise _fail(f"config update ({handle.run_id})", exc) from None

    def update_summary(self, handle: RunHandle, summary: dict[str, Any]) -> None:
        """Set summary keys (a set, not an append: writing the same values twice changes nothing)."""
        try:
            handle.run.summary.update(summary)
        except Exception as exc:  # noqa: BLE001
            raise _fail(f"summary update ({handle.run_id})", exc) from None

    def log(self, handle: RunHandle, metrics: dict[str, Any], step: int) -> None:
        """One history row at an explicit step (W&B ignores a step at or below one it already has)."""
        try:
            handle.run.log(metrics, step=step)
        except Exception as exc:  # noqa: BLE001
            raise _fail(f"log ({handle.run_id})", exc) from None

    def finish(self, handle: RunHandle, exit_code: int = 0) -> None:
        try:
            handle.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            raise _fail(f"finish ({handle.run_id})", exc) from None

    # -- read side --------------------------------------------------------------------------------------------

    def group_runs(self, group: str, per_page: int = 100) -> list[RemoteRun]:
        """Every run of ``group`` in the project, oldest first (``wandb.Api().runs(path, filters={"group": ...})``).

        Goes to ``WANDB_BASE_URL`` (default https://api.wandb.ai) with ``WANDB_API_KEY``; needs no local files.
        """
        if not os.environ.get("WANDB_API_KEY"):
            raise WandbError("reading a sweep back from W&B needs WANDB_API_KEY in the environment")
        try:
            import wandb

            api = wandb.Api(timeout=30)
            path = f"{self.entity}/{self.project}" if self.entity else self.project
            runs = api.runs(path, filters={"group": group}, order="+created_at", per_page=per_page, lazy=False)
            out = []
            for run in runs:
                out.append(
                    RemoteRun(
                        id=run.id,
                        name=run.name or run.id,
                        group=run.group,
                        job_type=run.job_type,
                        state=run.state or "unknown",
                        tags=tuple(run.tags or ()),
                        config=_plain(dict(run.config)),
                        summary=_plain(dict(run.summary_metrics or {})),
                        created_at=run.created_at,
                    )
                )
            return out
        except WandbError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _fail(
                f"listing runs of group {group!r} in {self.entity or '<default entity>'}/{self.project}", exc
            ) from None


def _plain(value: Any) -> Any:
    """W&B's dict-like summary and config objects as plain JSON data."""
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in dict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
