"""Sweep definitions: one pydantic-settings model, read from a TOML file, the environment and the command line.

Precedence, highest first: command line (``--args`` / ``--overrides``, dotted paths), environment (``SWEEP_*``,
nested with ``__``, e.g. ``SWEEP_PROTEIN__SETTINGS__NUM_RANDOM_SAMPLES=3``), the TOML file, the defaults.
"""

from __future__ import annotations

import getpass
import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from optimizers.config import ProteinConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ConfigError(Exception):
    """Bad sweep input; ``str()`` is the message shown to the user (no traceback)."""


def default_sweep_name() -> str:
    user = re.sub(r"[^A-Za-z0-9]", "", getpass.getuser()) or "user"
    return f"{user}.sweep.{time.strftime('%m%d%H%M')}"


class WandbSettings(BaseModel):
    """The W&B mirror. Unset ``mode`` means online when WANDB_API_KEY is in the environment, else offline
    (no network needed); ``disabled`` turns the mirror off. Set from the environment as SWEEP_WANDB__MODE."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["offline", "online", "disabled"] | None = None
    project: str = "sweeps"
    entity: str | None = None


class EarlyStoppingSettings(BaseModel):
    """Stop poor trials at their rungs from their ``SWEEP_REPORT`` lines (see orchestrator/core/early_stopping.py).
    Rungs are at ``grace_steps * reduction_factor**k`` training steps."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "median", "asha"] = "none"
    grace_steps: float = Field(1.0, gt=0, description="no trial is stopped before this training step (the first rung)")
    reduction_factor: float = Field(3.0, gt=1, description="rung spacing; asha keeps the top 1/reduction_factor")
    min_trials: int = Field(5, ge=1, description="trials that must have reached a rung before it stops anyone")
    evaluate_stopped: bool = Field(False, description="run the eval job of a stopped trial too")


class SweepConfig(BaseSettings):
    """A sweep: what to search (``protein``), what to run (recipe and command), and where (dispatcher)."""

    model_config = SettingsConfigDict(env_prefix="SWEEP_", env_nested_delimiter="__", extra="forbid")

    sweep_name: str = Field(default_factory=default_sweep_name)
    protein_config: ProteinConfig
    max_trials: int = Field(10, ge=1)
    recipe_module: str = "recipes.cartpole"
    train_entrypoint: str = "train"
    eval_entrypoint: str = "evaluate"
    max_parallel_jobs: int = Field(1, ge=1)
    scheduler: Literal["optimizing", "sequential"] = "optimizing"
    monitoring_interval: float = Field(10.0, gt=0, description="seconds between status tables")
    train_overrides: dict[str, Any] = {}
    eval_overrides: dict[str, Any] = {}
    dispatcher_type: str = "local"
    dispatcher_options: dict[str, dict[str, Any]] = {}
    capture_output: bool = True
    command: list[str] = Field(["{python}", "-m", "orchestrator.run"], min_length=1)
    train_dir: Path = Path("train_dir")
    max_retries: int = Field(1, ge=0, description="extra attempts per job before the trial fails")
    retry_backoff: float = Field(2.0, ge=0, description="seconds before the first retry, doubling after")
    job_timeout: float | None = Field(None, gt=0, description="seconds; default 2 x max_suggestion_cost")
    watch_grace: float = Field(
        60.0,
        ge=0,
        description="seconds past job_timeout (counted from the job's request) before a dispatcher "
        "that reports no exit is presumed hung: the job is cancelled and fails",
    )
    seed: int = Field(
        default_factory=lambda: secrets.randbelow(2**31),
        ge=0,
        description="the optimizer's seed; a new sweep draws one at random and records it in its definition",
    )
    max_consecutive_failures: int | None = Field(
        3,
        ge=0,
        description="stop the sweep after this many trials in a row fail with the same reason (0 or null: never; "
        "TOML has no null, so 0 is how a config file says never)",
    )
    early_stopping: EarlyStoppingSettings = EarlyStoppingSettings()
    store: Literal["sqlite", "wandb"] = "sqlite"
    wandb: WandbSettings = WandbSettings()
    http_host: str = "127.0.0.1"
    http_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    http_token: SecretStr | None = None

    @field_validator("sweep_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names files and W&B groups)")
        return value

    @field_validator("http_token")
    @classmethod
    def _blank_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None  # "" must not pass as one

    @field_validator("train_dir")
    @classmethod
    def _directory(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise ValueError("a directory name cannot contain a NUL byte")
        for part in value.parts:
            if len(part.encode("utf-8", "surrogateescape")) > 255:
                raise ValueError(f"{part[:40]!r}... is longer than 255 bytes, the file system's limit for a name")
        return value

    @field_validator("recipe_module", "train_entrypoint", "eval_entrypoint")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][\w.]*$", value):
            raise ValueError(f"{value!r} is not a Python module or function name")
        return value

    @model_validator(mode="after")
    def _remote_bind_needs_token(self) -> SweepConfig:
        if self.http_host not in ("127.0.0.1", "localhost", "::1") and self.http_token is None:
            raise ValueError(f"http_host={self.http_host} exposes the sweep beyond this machine: set http_token")
        return self

    @property
    def timeout(self) -> float:
        return self.job_timeout or 2 * self.protein_config.settings.max_suggestion_cost

    @property
    def sweep_dir(self) -> Path:
        return self.train_dir / self.sweep_name

    def argv_prefix(self) -> list[str]:
        return [sys.executable if part == "{python}" else part for part in self.command]

    def public_dict(self) -> dict[str, Any]:
        """The definition as recorded in the log and shown to people: JSON-able, secrets removed."""
        return self.model_dump(mode="json", exclude={"http_token"})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml_file:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict; values read as JSON when they parse (numbers, bools, lists)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not re.match(r"^[A-Za-z_][\w.-]*$", key):
            raise ConfigError(f"{flag}: expected key=value, got {item!r} (e.g. {flag} max_trials=5)")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        _assign(tree, key.split("."), value, flag, key)
    return tree


_PARAMETER_FIELDS = {"distribution", "min", "max", "mean", "scale", "choices"}


_PATH_KEYED = ("train_overrides", "eval_overrides")  # mappings whose keys are the recipe's dotted paths


def _assign(tree: dict[str, Any], parts: list[str], value: Any, flag: str, key: str) -> None:
    # Parameter names are dotted override paths: `protein_config.parameters.trainer.lr.max=1` sets field `max`
    # of parameter `trainer.lr`; likewise `train_overrides.trainer.total_timesteps=1` sets the key
    # `trainer.total_timesteps` of train_overrides (what the job gets as `--overrides trainer.total_timesteps=1`).
    if parts[0] in _PATH_KEYED and len(parts) > 2:
        parts = [parts[0], ".".join(parts[1:])]
    elif parts[:2] == ["protein_config", "parameters"] and len(parts) > 2:
        rest = parts[2:]
        if len(rest) > 1 and rest[-1] in _PARAMETER_FIELDS:
            parts = parts[:2] + [".".join(rest[:-1]), rest[-1]]
        else:
            parts = parts[:2] + [".".join(rest)]
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{flag}: {key!r} sets a field inside a value that is not a table")
    node[parts[-1]] = value


def merge_tree(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tree(out[key], value)
        else:
            out[key] = value
    return out


def config_path_for(name: str) -> Path | None:
    path = CONFIG_DIR / f"{name}.toml"
    return path if path.exists() else None


def load_config(
    file: Path | None = None,
    assignments: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> SweepConfig:
    """Build a SweepConfig from a TOML file (or a stored definition ``base``) plus command-line assignments."""
    if file is not None and not Path(file).exists():
        raise ConfigError(f"config file {file} does not exist (sweeps live in {CONFIG_DIR}/<name>.toml)")
    cls: type[SweepConfig] = SweepConfig
    if file is not None:
        cls = type("SweepConfig", (SweepConfig,), {"model_config": {**SweepConfig.model_config, "toml_file": file}})
    init = merge_tree(base or {}, assignments or {})
    try:
        return cls(**init)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file)) from None
    except ValueError as exc:  # e.g. a TOML syntax error
        raise ConfigError(f"cannot read {file}: {exc}{_quote_line(file, str(exc))}") from None


def _quote_line(file: Path | None, error: str) -> str:
    """The line a TOML syntax error points at, quoted after the error (with a hint when it writes ``null``, which
    TOML lacks), or ""."""
    where = re.search(r"at line (\d+)", error)
    if file is None or where is None:
        return ""
    try:
        line = Path(file).read_text(errors="replace").splitlines()[int(where.group(1)) - 1].strip()
    except (OSError, IndexError):
        return ""
    hint = ""
    if re.search(r"=\s*(null|None|nil)\b", line):
        hint = " (TOML has no null: leave the field out for its default, or give a value)"
    return f"\n  {line[:200]}{hint}"


def format_validation_error(exc: ValidationError, file: Path | None = None) -> str:
    where = f" in {file}" if file else ""
    lines = [f"invalid sweep definition{where}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against configs/quick_test.toml"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)
