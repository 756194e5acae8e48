"""The recipes sweep jobs run, as the service runs them: ``python -m orchestrator.run`` subprocesses."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.contract import extract_score, parse_progress, parse_result_line
from recipes.toy import ToyKnobs, toy_score


def job(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.run", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def result_of(proc: subprocess.CompletedProcess[str]) -> dict | None:
    results = [r for r in map(parse_result_line, proc.stdout.splitlines()) if r is not None]
    assert len(results) <= 1
    return results[0] if results else None


def toy_train(cwd: Path, run: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    return job("recipes.toy.train", "--args", f"run={run}", "--overrides", "toy.step_seconds=0", *overrides, cwd=cwd)


def toy_eval(cwd: Path, run: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    argv = ["recipes.toy.evaluate", "--args", f"policy_uri=file://./train_dir/{run}/checkpoints", f"run={run}"]
    return job(*argv, *(["--overrides", *overrides] if overrides else []), cwd=cwd)


# -- toy --------------------------------------------------------------------------------------------------------


def test_toy_train_then_eval(tmp_path: Path) -> None:
    train = toy_train(tmp_path, "toy_trial_0001", "toy.x=0.3", "toy.y=-0.2", "toy.lr=1e-3", "toy.total_timesteps=30000")
    assert train.returncode == 0, train.stderr
    progress = [p for p in map(parse_progress, train.stdout.splitlines()) if p is not None]
    assert len(progress) == 5 and progress[-1][0] == pytest.approx(30000) and progress[-1][1] == 30000
    assert result_of(train) == {"cost": 30.0, "metrics": pytest.approx(result_of(train)["metrics"])}
    assert list((tmp_path / "train_dir/toy_trial_0001/checkpoints").glob("model_*.json"))

    evaluation = toy_eval(tmp_path, "toy_trial_0001")
    assert evaluation.returncode == 0, evaluation.stderr
    result = result_of(evaluation)
    expected = toy_score(ToyKnobs(x=0.3, y=-0.2, lr=1e-3, total_timesteps=30000))
    assert extract_score(result, "score") == pytest.approx(expected)
    assert result["cost"] == 30.0


def test_toy_score_is_smooth_with_an_interior_optimum() -> None:
    best = toy_score(ToyKnobs(x=0.5, y=-0.25, lr=3e-3, total_timesteps=10**9))
    assert best == pytest.approx(1.0)
    for knobs in (dict(x=0.4), dict(y=0.0), dict(lr=1e-3), dict(lr=1e-2), dict(total_timesteps=1000)):
        base = dict(x=0.5, y=-0.25, lr=3e-3, total_timesteps=10**9)
        assert toy_score(ToyKnobs(**{**base, **knobs})) < best


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("exit", lambda p: p.returncode == 3 and parse_progress(p.stdout.splitlines()[0]) is not None),
        ("crash", lambda p: p.returncode == 1 and p.stdout == "" and "crashed on purpose" in p.stderr),
        ("kill", lambda p: p.returncode == -signal.SIGKILL),
        ("no_result", lambda p: p.returncode == 0 and result_of(p) is None),
    ],
)
def test_toy_train_misbehaves_on_request(tmp_path: Path, mode: str, check) -> None:
    proc = toy_train(tmp_path, "bad", f"toy.fail_mode={mode}")
    assert check(proc), (proc.returncode, proc.stdout, proc.stderr)


def test_toy_eval_result_problems(tmp_path: Path) -> None:
    assert toy_train(tmp_path, "r").returncode == 0
    malformed = toy_eval(tmp_path, "r", "toy.fail_mode=malformed_result", "toy.fail_in=eval")
    assert malformed.returncode == 0
    with pytest.raises(ValueError):
        result_of(malformed)
    for mode, reason in (
        ("nan_score", "not a finite number"),
        ("inf_score", "not a finite number"),
        ("string_score", "not a number"),
    ):
        proc = toy_eval(tmp_path, "r", f"toy.fail_mode={mode}", "toy.fail_in=eval")
        assert proc.returncode == 0
        with pytest.raises(ValueError, match=reason):
            extract_score(result_of(proc), "score")


def test_fail_only_the_eval_through_the_train_overrides(tmp_path: Path) -> None:
    """The service gives the eval job no train overrides: the checkpoint carries toy.fail_in=eval to it."""
    train = toy_train(tmp_path, "r", "toy.fail_mode=exit", "toy.fail_in=eval", "toy.exit_code=7")
    assert train.returncode == 0 and result_of(train) is not None
    assert toy_eval(tmp_path, "r").returncode == 7
    assert toy_eval(tmp_path, "r", "toy.fail_mode=none").returncode == 0  # the eval job's own overrides win


def test_missing_checkpoint_fails_the_eval_in_one_line(tmp_path: Path) -> None:
    assert toy_train(tmp_path, "r", "toy.fail_mode=no_checkpoint").returncode == 0
    proc = toy_eval(tmp_path, "r")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "no checkpoints at" in proc.stderr
    never = toy_eval(tmp_path, "never_trained")
    assert never.returncode == 1 and "train_dir/never_trained/checkpoints" in never.stderr


def test_flaky_fails_once_then_succeeds(tmp_path: Path) -> None:
    first = toy_train(tmp_path, "r", "toy.fail_mode=flaky")
    second = toy_train(tmp_path, "r", "toy.fail_mode=flaky")
    assert (first.returncode, second.returncode) == (3, 0)


def test_hang_stays_alive_until_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.run",
            "recipes.toy.train",
            "--args",
            "run=h",
            "--overrides",
            "toy.fail_mode=hang",
            "toy.step_seconds=0",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert parse_progress(first) is not None
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_toy_starts_fast_without_torch(tmp_path: Path) -> None:
    probe = (
        "import sys, runpy; sys.argv=['x','recipes.toy.train','--help']\n"
        "try:\n  runpy.run_module('orchestrator.run', run_name='__main__')\nexcept SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "NO_TORCH" in out.stderr
    start = time.monotonic()
    assert toy_train(tmp_path, "fast", "toy.steps=1").returncode == 0
    assert time.monotonic() - start < 10  # generous: the machine may be busy; about 0.3 s when idle


# -- cartpole ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cartpole_train_then_eval(tmp_path: Path) -> None:
    train = job(
        "recipes.cartpole.train",
        "--args",
        "run=cp_trial_0001",
        "--overrides",
        "trainer.total_timesteps=1024",
        "trainer.num_envs=2",
        "trainer.n_steps=128",
        "trainer.minibatch_size=64",
        "trainer.update_epochs=2",
        "trainer.checkpoint_interval=512",
        "trainer.optimizer.learning_rate=1e-3",
        "trainer.progress_interval=0",
        cwd=tmp_path,
        timeout=120,
    )
    assert train.returncode == 0, train.stderr
    progress = [p for p in map(parse_progress, train.stdout.splitlines()) if p is not None]
    assert progress and progress[-1][0] == pytest.approx(1024, rel=0.01)  # the line shows 1.02 ksteps
    train_result = result_of(train)
    assert train_result["cost"] > 0 and train_result["metrics"]["train/timesteps"] == 1024
    ckpts = sorted(p.name for p in (tmp_path / "train_dir/cp_trial_0001/checkpoints").glob("model_*.zip"))
    assert ckpts == ["model_0000000512.zip", "model_0000001024.zip"]

    evaluation = job(
        "recipes.cartpole.evaluate",
        "--args",
        "policy_uri=file://./train_dir/cp_trial_0001/checkpoints",
        "run=cp_trial_0001",
        "--overrides",
        "evaluator.episodes=3",
        cwd=tmp_path,
        timeout=120,
    )
    assert evaluation.returncode == 0, evaluation.stderr
    result = result_of(evaluation)
    score = extract_score(result, "evaluator/eval_arena/score")
    assert 1 <= score <= 500 and math.isfinite(score)
    assert result["metrics"]["eval/checkpoint"] == "model_0000001024.zip"
    assert result["metrics"]["eval/episodes"] == 3
    assert result["cost"] == pytest.approx(train_result["cost"], rel=0.5)
    assert json.loads((tmp_path / "train_dir/cp_trial_0001/checkpoints/meta.json").read_text())["step"] == 1024
    assert os.listdir(tmp_path / "train_dir/cp_trial_0001/checkpoints").count("meta.json") == 1
