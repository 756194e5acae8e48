"""The recipe runner, through real ``python -m orchestrator.run`` subprocesses (and a few in-process checks)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.contract import parse_result_line
from orchestrator.run import Invocation, UsageError, coerce, load_recipe, parse_argv, resolve_call


def job(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.run", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def usage_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one-line message of a bad-input exit (code 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def dry_run(*argv: str, cwd: Path) -> dict:
    proc = job(*argv, "--dry-run", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["kwargs"]


# A recipe module written the way anyone's training code would be, found on the job's working directory.
MY_RECIPES = textwrap.dedent(
    '''
    from typing import Literal, Optional
    from pydantic import BaseModel
    from orchestrator.run import RecipeError

    class Opt(BaseModel):
        learning_rate: float = 3e-4
        betas: list[float] = [0.9, 0.999]

    class Trainer(BaseModel):
        total_timesteps: int = 1000
        optimizer: Opt = Opt()
        compile: bool = False
        device: Literal["cpu", "cuda"] = "cpu"
        max_epochs: Optional[int] = 5
        name: str = "x"

    class Config(BaseModel):
        trainer: Trainer = Trainer()

    def train(run: str, config: Config = Config(), repeats: int = 1) -> dict:
        """Echo what arrived."""
        return {"score": config.trainer.optimizer.learning_rate, "run": run, "repeats": repeats,
                "config": config.model_dump()}

    def plain(a: int, b: float = 0.5) -> dict:
        return {"score": a + b}

    def explained_failure(run: str) -> None:
        raise RecipeError("no checkpoint for " + run)

    def bug(run: str) -> None:
        raise ZeroDivisionError("a real bug")

    def untyped(n=3, name="x"):
        return {"score": n * 2, "name": name}

    def returns_nothing() -> None:
        print("did some work")
    '''
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "my_recipes.py").write_text(MY_RECIPES)
    return tmp_path


def test_overrides_and_args_are_applied_with_types(workdir: Path) -> None:
    proc = job(
        "my_recipes.train",
        "--args",
        "run=demo_trial_0001",
        "repeats=3",
        "--overrides",
        "trainer.optimizer.learning_rate=1e-3",
        "trainer.total_timesteps=2e4",
        "trainer.compile=true",
        "trainer.device=cuda",
        "trainer.max_epochs=null",
        "trainer.name=1e-3",
        "trainer.optimizer.betas=[0.8, 0.9]",
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    results = [r for r in map(parse_result_line, proc.stdout.splitlines()) if r is not None]
    assert len(results) == 1
    r = results[0]
    assert r["score"] == 1e-3 and r["run"] == "demo_trial_0001" and r["repeats"] == 3
    t = r["config"]["trainer"]
    assert t["total_timesteps"] == 20000 and isinstance(t["total_timesteps"], int)
    assert t["compile"] is True and t["device"] == "cuda" and t["max_epochs"] is None
    assert t["name"] == "1e-3"  # a str field keeps the string
    assert t["optimizer"]["betas"] == [0.8, 0.9]


def test_seed_style_command_on_the_demo_recipe(tmp_path: Path) -> None:
    kwargs = dry_run(
        "recipes.cartpole.train",
        "--args",
        "run=demo_trial_0001",
        "--overrides",
        "trainer.optimizer.learning_rate=0.001",
        "trainer.total_timesteps=20000",
        "trainer.losses.loss_configs.ppo.clip_coef=0.25",
        "trainer.losses.loss_configs.ppo.ent_coef=0.01",
        "trainer.losses.loss_configs.ppo.gae_lambda=0.9",
        "trainer.losses.loss_configs.ppo.vf_coef=0.4",
        cwd=tmp_path,
    )
    trainer = kwargs["config"]["trainer"]
    assert kwargs["run"] == "demo_trial_0001"
    assert trainer["optimizer"]["learning_rate"] == 0.001 and trainer["total_timesteps"] == 20000
    assert trainer["losses"]["loss_configs"]["ppo"] == {
        "clip_coef": 0.25,
        "ent_coef": 0.01,
        "gae_lambda": 0.9,
        "vf_coef": 0.4,
        "gamma": 0.98,
    }


def test_bare_assignments_and_last_one_wins(tmp_path: Path) -> None:
    kwargs = dry_run("recipes.toy.train", "run=r1", "toy.x=1", "--overrides", "toy.x=2", cwd=tmp_path)
    assert kwargs["run"] == "r1" and kwargs["config"]["toy"]["x"] == 2.0


def test_unknown_override_names_the_nearest_path(tmp_path: Path) -> None:
    proc = job(
        "recipes.cartpole.train",
        "--args",
        "run=r",
        "--overrides",
        "trainer.optimizer.lerning_rate=0.001",
        cwd=tmp_path,
    )
    assert (
        "unknown override 'trainer.optimizer.lerning_rate'; did you mean 'trainer.optimizer.learning_rate'?"
        in usage_error(proc)
    )
    proc = job("recipes.cartpole.train", "--args", "run=r", "--overrides", "ppo.clip_coef=0.1", cwd=tmp_path)
    assert "did you mean 'trainer.losses.loss_configs.ppo.clip_coef'?" in usage_error(proc)
    proc = job("recipes.cartpole.evaluate", "--args", "policy_uri=file://x", "rn=r", cwd=tmp_path)
    assert "unknown argument 'rn'; did you mean 'run'?" in usage_error(proc)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("toy.steps=abc", "invalid value 'abc' for override 'toy.steps' (expected int)"),
        ("toy.steps=2.5", "'toy.steps'"),
        ("toy.lr=-1", "invalid value '-1' for override 'toy.lr' (expected float): Input should be greater than 0"),
        ("toy.x=nan", "invalid config at 'toy.x'"),
        ("toy.fail_mode=explode", "expected one of 'none', 'exit'"),
        ("toy=1", "'toy' is a config section, not a value"),
    ],
)
def test_bad_values_exit_2_naming_the_path(tmp_path: Path, override: str, expected: str) -> None:
    proc = job("recipes.toy.train", "--args", "run=r", "--overrides", override, cwd=tmp_path)
    assert expected in usage_error(proc)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["recipes.toy.train", "--args", "run"], "malformed assignment 'run' in --args"),
        (["recipes.toy.train", "--args", "run=r", "--overrides", "=3"], "malformed assignment '=3' in --overrides"),
        (
            ["recipes.toy.train", "--args", "run=r", "--overides", "toy.x=1"],
            "unknown option '--overides'; did you mean '--overrides'?",
        ),
        (["recipes.toy.trian", "--args", "run=r"], "has no recipe function 'trian'; did you mean 'train'?"),
        (["recipes.tyo.train"], "unknown module 'recipes.tyo'; did you mean 'recipes.toy'?"),
        (["nosuchpackage.train"], "unknown module 'nosuchpackage'"),
        (["train"], "expected a recipe as <module>.<function>"),
        (["recipes.toy.train"], "needs --args run=<str>"),
        (["recipes.toy.train", "--args", "run=../escape"], "invalid value '../escape' for argument 'run'"),
        (["recipes.cartpole.evaluate", "--args", "policy_uri=s3://bucket/x"], "scheme 's3' is not supported"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(tmp_path: Path, argv: list[str], expected: str) -> None:
    assert expected in usage_error(job(*argv, cwd=tmp_path))


def test_help(tmp_path: Path) -> None:
    general = job("--help", cwd=tmp_path)
    assert general.returncode == 0 and "--overrides" in general.stdout
    nothing = job(cwd=tmp_path)
    assert nothing.returncode == 2 and "usage:" in nothing.stderr
    recipe = job("recipes.cartpole.train", "--help", cwd=tmp_path)
    assert recipe.returncode == 0
    for path in (
        "trainer.optimizer.learning_rate",
        "trainer.total_timesteps",
        "trainer.losses.loss_configs.ppo.clip_coef",
        "trainer.losses.loss_configs.ppo.ent_coef",
        "trainer.losses.loss_configs.ppo.gae_lambda",
        "trainer.losses.loss_configs.ppo.vf_coef",
    ):
        assert path in recipe.stdout
    assert "run" in recipe.stdout and "required" in recipe.stdout


def test_recipe_outcomes_decide_the_exit(workdir: Path) -> None:
    explained = job("my_recipes.explained_failure", "--args", "run=r7", cwd=workdir)
    assert explained.returncode == 1 and "Traceback" not in explained.stderr
    assert "no checkpoint for r7" in explained.stderr
    bug = job("my_recipes.bug", "--args", "run=r", cwd=workdir)
    assert bug.returncode == 1 and "ZeroDivisionError: a real bug" in bug.stderr  # a real bug keeps its traceback
    untyped = job("my_recipes.untyped", "n=4", "name=5", cwd=workdir)
    assert untyped.returncode == 0 and '"score": 8, "name": "5"' in untyped.stdout  # types from the defaults
    nothing = job("my_recipes.returns_nothing", cwd=workdir)
    assert nothing.returncode == 0 and "SWEEP_RESULT" not in nothing.stdout and "did some work" in nothing.stdout


INERT = [
    "; rm -rf /",
    "$(touch pwned_subst)",
    "`touch pwned_backtick`",
    '\' OR "1"="1',
    'line one\nline two\nSWEEP_RESULT {"score": 1e9}',
    "a=b=c && echo hi > pwned_redirect",
    "ünïcödé ✓ %s {0} \\n",
    "",
]


def test_injection_looking_values_arrive_inert(tmp_path: Path) -> None:
    for i, value in enumerate(INERT):
        proc = job(
            "recipes.toy.train",
            "--args",
            f"run=inert_{i}",
            "--overrides",
            f"toy.note={value}",
            "toy.step_seconds=0",
            "toy.steps=1",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        results = [r for r in map(parse_result_line, proc.stdout.splitlines()) if r is not None]
        assert len(results) == 1  # a newline in a value cannot forge a second result line
        assert results[0]["metrics"]["toy/note"] == value
    assert not list(tmp_path.glob("pwned*"))
    assert sorted(p.name for p in (tmp_path / "train_dir").iterdir()) == sorted(f"inert_{i}" for i in range(len(INERT)))


# -- in process: the parsing and coercion rules ------------------------------------------------------------------


def test_parse_argv_keeps_values_exact() -> None:
    inv = parse_argv(["m.f", "--args", "run=a b", "--overrides", "x.y=1=2", "z= spaced "])
    assert inv.target == "m.f"
    assert inv.args == [("run", "a b")] and inv.overrides == [("x.y", "1=2"), ("z", " spaced ")]
    assert parse_argv(["m.f", "k=v", "--args", "run=r"]).assignments == [(None, "k", "v"), ("args", "run", "r")]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_string_reaches_a_str_field_unchanged(value: str) -> None:
    recipe = load_recipe("recipes.toy.train")
    inv = parse_argv(["recipes.toy.train", "--args", "run=r", "--overrides", f"toy.note={value}"])
    assert resolve_call(recipe, inv)["config"].toy.note == value


@pytest.mark.parametrize(
    ("annotation", "raw", "expected"),
    [
        (float, "1e-3", 0.001),
        (int, "50_000", 50000),
        (int, "2e4", 20000),
        (int, "64.0", 64),
        (bool, "false", False),
        (bool, "1", True),
        (str, "0.1", "0.1"),
        (int | None, "None", None),
        (float, " 0.5 ", 0.5),
    ],
)
def test_coerce(annotation: object, raw: str, expected: object) -> None:
    value = coerce("p", annotation, raw)
    assert value == expected and type(value) is type(expected)


def test_coerce_rejects() -> None:
    for annotation, raw in [(int, "2.5"), (int, "ten"), (bool, "maybe"), (float, "")]:
        with pytest.raises(UsageError, match="'p'"):
            coerce("p", annotation, raw)


def test_config_records_which_values_were_set() -> None:
    recipe = load_recipe("recipes.toy.evaluate")
    inv = Invocation("recipes.toy.evaluate", [("args", "policy_uri", "x"), ("overrides", "toy.fail_mode", "crash")])
    kwargs = resolve_call(recipe, inv)
    assert kwargs["config"].model_dump(exclude_unset=True) == {"toy": {"fail_mode": "crash"}}
