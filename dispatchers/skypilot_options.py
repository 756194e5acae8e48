"""The SkyPilot dispatcher's options (``dispatcher_options.skypilot``) and the names it gives jobs and clusters."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dispatchers.base import DispatcherError

_SEPARATORS = re.compile(r"[^A-Za-z0-9._-]+")
_GPUS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(:\d+(\.\d+)?)?$")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.I)
_PLACEHOLDERS = {
    "job_name",
    "key",
    "run",
    "kind",
    "trial",
    "attempt",
    "sweep",
    "gpus",
    "gpu_type",
    "gpu_count",
    "nodes",
    "cloud",
    "region",
}


def job_name(key: str) -> str:
    """SkyPilot's name for the job with this key: the key itself when SkyPilot accepts it (it does for the
    service's ``<sweep>_trial_0007.train.1`` keys), else a sanitized form. Deterministic, so a restarted
    service finds the job again by name."""
    name = _SEPARATORS.sub("-", key)
    name = re.sub(r"[._-]{3,}", "--", name).strip("._-")
    if not name or not name[0].isalpha():
        name = "job-" + name
    return name


def cluster_name_for(sweep: str) -> str:
    name = re.sub(r"[^A-Za-z0-9-]+", "-", sweep).strip("-").lower()
    return f"sweep-{name}"[:60].rstrip("-")


class SkyPilotOptions(BaseModel):
    """``[dispatcher_options.skypilot]`` in a sweep's TOML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: str | None = Field(None, description='accelerators per node, e.g. "A10G:1" (the seed\'s --gpus)')
    nodes: int = Field(1, ge=1, description="nodes per job (the seed's --nodes)")
    use_spot: bool = Field(True, description="spot instances (false is the seed's --no-spot)")
    cloud: str | None = None
    region: str | None = None
    launch_mode: Literal["managed", "cluster"] = "managed"
    cluster_name: str | None = Field(None, description='cluster mode: the cluster (default "sweep-<sweep>")')
    idle_minutes_to_autostop: int | None = Field(None, ge=0, description="cluster mode: autostop when idle")
    workdir: str | None = Field(None, description="synced to the VM; the job runs there")
    setup: str | None = Field(None, description="setup commands run once per VM (e.g. pip install -e .)")
    env: dict[str, str] = Field({}, description="extra environment variables for every job")
    secrets: list[str] = Field([], description="names of service environment variables passed as SkyPilot secrets")
    file_mounts: dict[str, str] = {}
    python: str = Field("python", description="replaces the service's interpreter path at the start of argv")
    max_restarts_on_errors: int = Field(0, ge=0, description="managed jobs: restarts after a user-code failure")
    command_template: list[str] | None = Field(None, description="launch through your own script (argv list)")
    command_job_name: str = Field("{job_name}", description="the managed job name your script launches")
    poll_interval: float = Field(15.0, gt=0, description="seconds between status polls")
    max_concurrent_calls: int = Field(4, ge=1, description="SDK calls in flight at once (worker threads)")
    max_log_streams: int = Field(64, ge=1)
    log_reopen_delay: float = Field(5.0, ge=0, description="seconds before following logs again after a drop")
    checkpoint_bucket: str | None = Field(
        None,
        description='e.g. "s3://my-bucket/sweeps": mounted at each job\'s train_dir/<run>/checkpoints (hand-over)',
    )
    max_launches_in_flight: int = Field(16, ge=1, description="launch requests in flight at once")
    api_retries: int = Field(6, ge=0, description="retries of an SDK call after an API error (backoff, jitter)")
    api_backoff: float = Field(1.0, gt=0, description="seconds before the first retry; doubles each time")
    sdk: str | None = Field(None, description='testing hook: "module:Class" implementing the SkySDK seam')
    sdk_options: dict[str, Any] = {}

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | None) -> str | None:
        if value is not None and not _GPUS.match(value):
            raise ValueError(f'{value!r} is not NAME or NAME:COUNT (e.g. "A10G:1", "H100:8")')
        return value

    @field_validator("checkpoint_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]+://[^/\s]+(/\S*)?", value):
            raise ValueError(f'{value!r} is not a bucket URI: name one like "s3://my-bucket/sweeps" or "gs://b/p"')
        return value.rstrip("/") if value else value

    @field_validator("cluster_name")
    @classmethod
    def _cluster(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?", value):
            raise ValueError("start with a letter; then letters, digits, '-', '_', '.'")
        return value

    @field_validator("command_template")
    @classmethod
    def _template(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must be a non-empty argv list")
        for item in value:
            if item in ("{argv}", "{no_spot}"):
                continue
            for name in re.findall(r"{(\w*)}", item):
                if name not in _PLACEHOLDERS:
                    raise ValueError(
                        f"unknown placeholder {{{name}}} in {item!r}; use {{argv}}, {{no_spot}} or one of "
                        + ", ".join("{" + p + "}" for p in sorted(_PLACEHOLDERS))
                    )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SkyPilotOptions:
        if self.region and not self.cloud:
            raise ValueError('region needs cloud (e.g. cloud = "aws", region = "us-east-1")')
        if self.command_template is not None and self.launch_mode != "managed":
            raise ValueError('command_template launches managed jobs: use it with launch_mode = "managed"')
        if self.cluster_name and self.launch_mode != "cluster":
            raise ValueError('cluster_name is for launch_mode = "cluster"')
        return self

    @property
    def infra(self) -> str | None:
        if not self.cloud:
            return None
        return f"{self.cloud}/{self.region}" if self.region else self.cloud


def parse_options(options: dict[str, Any]) -> SkyPilotOptions:
    """The options, or a DispatcherError naming each bad option and its fix."""
    try:
        return SkyPilotOptions(**options)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<options>"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(SkyPilotOptions.model_fields))
                msg = f"unknown option; known options: {known}"
            lines.append(f"  dispatcher_options.skypilot.{loc}: {msg}")
        raise DispatcherError("invalid SkyPilot options:\n" + "\n".join(lines)) from None
