"""Bad input: property-based tests over sweep definitions, command lines and recipe overrides, and shell injection.

Whatever a person types or writes in a sweep file, the answer is either a running sweep or exit code 2 with one
message naming the field: never a traceback. And whatever a hyperparameter holds (``; rm -rf x``, ``$(...)``,
quotes, newlines), it reaches the job as the same inert argv string.

The serve properties run ``orchestrator.cli.main`` in-process with the sweep's loop stubbed out (everything up to
it runs for real: reading the file, validation, the stored definition, building the dispatcher, optimizer and
store); a few real subprocesses check that no traceback reaches a terminal either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import cli
from orchestrator import run as recipe_runner
from orchestrator.config import load_config
from orchestrator.logs import configure_logging
from orchestrator.reducer import fold
from orchestrator.runtime import build_service
from orchestrator.service import SweepService
from orchestrator.state import SweepState
from stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
ARGV_JOB = ROOT / "tests" / "jobs" / "argv_job.py"
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- a tiny TOML writer (inline tables), enough for any value hypothesis makes ----------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_string(text: str) -> str:
    """A TOML basic string: control characters escaped, everything else as is."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_document(tree: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in tree.items())


def base_definition() -> dict[str, Any]:
    return {
        "max_trials": 3,
        "recipe_module": "recipes.toy",
        "wandb": {"mode": "disabled"},
        "protein_config": {
            "metric": "score",
            "method": "random",
            "parameters": {"toy.x": {"distribution": "uniform", "min": -1.0, "max": 1.0}},
            "settings": {"num_random_samples": 2},
        },
    }


# -- running the command line in-process --------------------------------------------------------------------------


@contextlib.contextmanager
def sweep_loop_stubbed() -> Iterator[None]:
    """serve does everything up to the sweep's loop for real; the loop itself returns at once."""

    async def no_loop(self: SweepService) -> SweepState:
        return SweepState(finished=True, completed=1)  # as a sweep that ran: serve exits 0

    real = SweepService.run
    SweepService.run = no_loop  # type: ignore[method-assign]
    try:
        yield
    finally:
        SweepService.run = real  # type: ignore[method-assign]


def call(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """Run a ``main`` in-process: its exit code and what it wrote to stderr. Any exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue()


def assert_usage_error(code: int, err: str) -> None:
    assert code == 2, (code, err)
    assert err.strip(), "exit code 2 needs a message"
    assert "Traceback" not in err, err


def names_one_of(message: str, paths: list[tuple[str, ...]]) -> bool:
    """Whether the message names one of the fields (its full dotted path, or the first two parts of it)."""
    for path in paths:
        for n in range(len(path), min(len(path), 2) - 1, -1):
            if ".".join(path[:n]) in message:
                return True
    return False


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    with open(os.devnull, "w") as devnull:
        configure_logging("json", stream=devnull)
        yield
    configure_logging("json", stream=sys.stdout)


# -- sweep definitions (TOML) -------------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | _text
    | st.dates()
    | st.datetimes()
    | st.sampled_from(["uniform", "log_normal", "categorical", "bayes", "local", "maximize", "0.0.0.0", "-1", ""])
)
toml_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=6
)

_P = ("protein_config", "parameters", "toy.x")
KNOWN_PATHS: list[tuple[str, ...]] = [
    ("sweep_name",),
    ("max_trials",),
    ("max_parallel_jobs",),
    ("scheduler",),
    ("recipe_module",),
    ("train_entrypoint",),
    ("eval_entrypoint",),
    ("monitoring_interval",),
    ("train_overrides",),
    ("eval_overrides",),
    ("dispatcher_type",),
    ("dispatcher_options",),
    ("dispatcher_options", "local"),
    ("dispatcher_options", "local", "poll_interval"),
    ("capture_output",),
    ("command",),
    ("max_retries",),
    ("retry_backoff",),
    ("job_timeout",),
    ("seed",),
    ("store",),
    ("wandb",),
    ("wandb", "mode"),
    ("wandb", "project"),
    ("http_host",),
    ("http_port",),
    ("http_token",),
    ("protein_config",),
    ("protein_config", "metric"),
    ("protein_config", "goal"),
    ("protein_config", "method"),
    ("protein_config", "parameters"),
    _P,
    (*_P, "distribution"),
    (*_P, "min"),
    (*_P, "max"),
    (*_P, "mean"),
    (*_P, "scale"),
    (*_P, "choices"),
    ("protein_config", "parameters", "new.param"),
    ("protein_config", "settings"),
    ("protein_config", "settings", "num_random_samples"),
    ("protein_config", "settings", "max_suggestion_cost"),
    ("protein_config", "settings", "random_suggestions"),
]
paths = st.sampled_from(KNOWN_PATHS) | st.builds(
    lambda parent, key: (*parent, key), st.sampled_from([(), ("protein_config",), _P, ("wandb",)]), _text
)
# train_dir names where files go: only relative names here (the test runs as whoever runs it), but hostile ones.
train_dirs = st.sampled_from(["td", "a b", "x" * 300, "nul\x00byte", "..", ".", "line\nbreak", "$(touch pwned)"])
mutations = st.lists(
    st.one_of(
        st.tuples(paths, toml_values),
        st.tuples(paths, st.just(None)),  # None: delete the field
        st.tuples(st.just(("train_dir",)), train_dirs),
    ),
    min_size=1,
    max_size=3,
)


def apply(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@PROPERTY
@given(mutations)
def test_any_sweep_file_runs_or_gets_one_message_naming_the_field(changes: list[tuple[tuple[str, ...], Any]]) -> None:
    tree = base_definition()
    for path, value in changes:
        apply(tree, path, value)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), sweep_loop_stubbed():
        Path("sweep.toml").write_text(toml_document(tree))
        code, err = call(cli.main, ["serve", "--sweep", "fuzz", "--config", "sweep.toml"])
    if code == 0:
        return
    assert_usage_error(code, err)
    assert names_one_of(err, [p for p, _ in changes]), (changes, err)


@PROPERTY
@given(st.binary(max_size=200) | _text.map(str.encode))
def test_a_sweep_file_that_is_not_toml_gets_one_message(body: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), sweep_loop_stubbed():
        Path("sweep.toml").write_bytes(body)
        code, err = call(cli.main, ["serve", "--sweep", "fuzz", "--config", "sweep.toml"])
    assert_usage_error(code, err)
    assert "sweep.toml" in err or "protein_config" in err, err


# -- command-line arguments ----------------------------------------------------------------------------------------

CLI_KEYS = [".".join(p) for p in KNOWN_PATHS if p != ("sweep_name",)] + [
    "protein_config.parameters.toy.x.max",
    "protein_config.parameters.toy.x.min",
    "protein_config.parameters.other.param.distribution",
    "train_overrides.trainer.lr",
]
_values = st.one_of(
    _text,
    st.sampled_from(
        ["5", "0", "-1", "1e400", "nan", "true", "null", "[1, 2]", '{"a": 1}', "{", '"str"', "$(rm -rf x)", "a b"]
    ),
    st.integers().map(str),
    st.floats().map(repr),
)
assignments = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from(CLI_KEYS) | _text.filter(lambda s: not s.startswith("-")), _values
    ),
    _text.filter(lambda s: not s.startswith("-")),  # often no '=' at all
)


@PROPERTY
@given(st.lists(assignments, max_size=4), st.lists(assignments, max_size=4))
def test_any_args_and_overrides_run_or_get_one_message_naming_the_field(args: list[str], overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), sweep_loop_stubbed():
        Path("sweep.toml").write_text(toml_document(base_definition()))
        argv = ["serve", "--sweep", "fuzz", "--config", "sweep.toml", "--train-dir", "td"]
        code, err = call(cli.main, [*argv, "--args", *args, "--overrides", *overrides])
    if code == 0:
        return
    assert_usage_error(code, err)
    assert names_one_of(err, [tuple(t.partition("=")[0].split(".")) for t in args + overrides]) or any(
        repr(t) in err
        for t in args + overrides  # a malformed item is quoted whole
    ), (args, overrides, err)


@PROPERTY
@given(
    st.sampled_from(["serve", "status"]),
    _text | st.sampled_from(["x" * 400, "a/b", "../..", "-", "has space", "ok_name"]),
    st.none() | _text,
)
def test_any_sweep_name_and_train_dir_get_a_message_not_a_traceback(
    command: str, name: str, train_dir: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), sweep_loop_stubbed():
        Path("sweep.toml").write_text(toml_document(base_definition()))
        argv = [command, "--sweep", name]
        if command == "serve":
            argv += ["--config", "sweep.toml"]
        if train_dir is not None:
            argv += ["--train-dir", os.path.join("td", train_dir)]  # relative: hostile, but inside the temp dir
        code, err = call(cli.main, argv)
    if code != 0:
        assert_usage_error(code, err)


# -- recipe command lines (python -m orchestrator.run) --------------------------------------------------------------

TOY_PATHS = [
    "toy.x",
    "toy.lr",
    "toy.steps",
    "toy.total_timesteps",
    "toy.cost",
    "toy.note",
    "toy.fail_mode",
    "toy.fail_in",
    "toy.exit_code",
    "toy",
    "toy.x.y",
    "trainer.lr",
    "run",
    "train_dir",
    "config",
]
recipe_assignments = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(TOY_PATHS) | _text, _values),
    _text,
)


@PROPERTY
@given(
    st.sampled_from(["recipes.toy.train", "recipes.toy.evaluate"]),
    st.lists(recipe_assignments, max_size=3),
    st.lists(recipe_assignments, max_size=4),
)
def test_any_recipe_overrides_run_or_get_one_line_naming_the_field(
    target: str, args: list[str], overrides: list[str]
) -> None:
    argv = [target, "--args", *args, "--overrides", *overrides, "--dry-run"]
    code, err = call(recipe_runner.main, argv)
    if code == 0:
        return
    assert_usage_error(code, err)
    assert len(err.strip().splitlines()) == 1, err
    tokens = [t for t in args + overrides]
    named = any(t.partition("=")[0] and repr(t.partition("=")[0]) in err for t in tokens)
    assert named or any(repr(t) in err for t in tokens) or "needs --args" in err, (argv, err)


# -- a few real processes: nothing reaches a terminal as a traceback -----------------------------------------------


def run_cli(*argv: str, cwd: Path, module: str = "orchestrator") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "body, argv, message",
    [
        (b"\xff\xfe not toml [[[", [], "sweep.toml"),
        (toml_document(base_definition()).encode(), ["--args", "max_trials=$(rm -rf x)"], "max_trials"),
        (toml_document(base_definition()).encode(), ["--overrides", "protein_config.parameters.toy.x.max=-5"], "toy.x"),
        (toml_document(base_definition()).encode(), ["--args", "dispatcher_type=; rm -rf x"], "dispatcher_type"),
        (toml_document(base_definition()).encode(), ["--args", "train_dir=" + "x" * 300], "train_dir"),
        (toml_document({**base_definition(), "max_trials": "ten"}).encode(), [], "max_trials"),
    ],
)
def test_real_serve_processes_exit_2_without_a_traceback(
    tmp_path: Path, body: bytes, argv: list[str], message: str
) -> None:
    (tmp_path / "sweep.toml").write_bytes(body)
    (tmp_path / "x").mkdir()
    proc = run_cli("serve", "--sweep", "real", "--config", "sweep.toml", *argv, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout and message in proc.stderr, proc.stderr
    assert (tmp_path / "x").exists()


def test_real_status_and_recipe_processes_exit_2_without_a_traceback(tmp_path: Path) -> None:
    for argv, module in [
        (["status", "--sweep", "x" * 400], "orchestrator"),
        (["recipes.toy.train", "--args", "run=../..", "--overrides", "toy.x=$(touch pwned)"], "orchestrator.run"),
        (["recipes.toy.train", "--overrides", "toy.steps=1; rm -rf x", "--args", "run=r"], "orchestrator.run"),
        (["recipes.toy.nope"], "orchestrator.run"),
    ]:
        proc = run_cli(*argv, cwd=tmp_path, module=module)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert not (tmp_path / "pwned").exists()


# -- shell injection: hostile strings arrive as inert argv strings --------------------------------------------------

HOSTILE = [
    "; rm -rf x",
    "$(touch pwned_subst)",
    "`touch pwned_backtick`",
    "a'b\"c",
    "line\nbreak",
    "&& touch pwned_and",
    "| touch pwned_pipe #",
    "> pwned_redirect",
    "--overrides",
    "x=y=z",
    "$HOME ${PATH} %s {python}",
    " leading and trailing ",
    "ünïcødé ☃",
]


def test_hostile_parameter_names_and_values_reach_the_job_as_inert_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("still here")
    log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("ARGV_LOG", str(log))
    parameters: dict[str, Any] = {
        # Each hostile string is the only choice of its own parameter, so every trial carries all of them.
        f"p{i}": {"distribution": "categorical", "choices": [s]}
        for i, s in enumerate(HOSTILE)
    }
    parameters["name; touch pwned_name $(touch pwned_name2)"] = {"distribution": "categorical", "choices": ["v"]}
    parameters["all"] = {"distribution": "categorical", "choices": HOSTILE}
    tree = {
        "sweep_name": "inject",
        "max_trials": 2,
        "max_parallel_jobs": 2,
        "recipe_module": "recipes.toy",
        "command": ["{python}", str(ARGV_JOB)],
        "monitoring_interval": 600,
        "wandb": {"mode": "disabled"},
        "train_overrides": {"note": "$(touch pwned_override) ; rm -rf x", "quote": "a'b\"c\nd"},
        "eval_overrides": {"eval.note": "`touch pwned_eval`"},
        "protein_config": {"metric": "score", "method": "random", "parameters": parameters},
    }
    # Through a real sweep file: TOML escapes, validation and the stored definition all see these strings.
    (tmp_path / "sweep.toml").write_text(toml_document(tree))
    config = load_config(tmp_path / "sweep.toml", {"sweep_name": "inject"})
    live = anyio.run(build_service(config).run)
    assert live.finished and all(t.status == "completed" for t in live.shown_trials())

    records = {r["key"]: r["argv"] for r in map(json.loads, log.read_text().splitlines())}
    assert len(records) == 4  # two trials, a train and an eval each
    store = SQLiteStore(config.sweep_dir / "events.db")
    state = fold(s.event for s in store.read(0))
    store.close()
    for trial in state.shown_trials():
        train = records[f"inject_trial_{trial.trial:04d}.train.1"]
        assert train[:4] == ["recipes.toy.train", "--args", f"run={trial.run}", "--overrides"]
        expected = [f"note={tree['train_overrides']['note']}", f"quote={tree['train_overrides']['quote']}"]
        expected += [f"p{i}={s}" for i, s in enumerate(HOSTILE)]
        expected += ["name; touch pwned_name $(touch pwned_name2)=v", f"all={trial.params['all']}"]
        assert sorted(train[4:]) == sorted(expected)
        evaluation = records[f"inject_trial_{trial.trial:04d}.eval.1"]
        assert evaluation[-2:] == ["--overrides", "eval.note=`touch pwned_eval`"]
    leftovers = sorted(p.name for p in tmp_path.rglob("pwned*"))
    assert leftovers == [], leftovers
    assert (tmp_path / "x" / "keep").read_text() == "still here"
