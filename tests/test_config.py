"""Sweep definitions: every way to give one, and one clear message (exit 2, no traceback) for every mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from optimizers import ParameterConfig, ProteinConfig, ProteinSettings
from optimizers.spaces import search_center
from orchestrator.cli import main
from orchestrator.config import CONFIG_DIR, SweepConfig, load_config, parse_assignments

ROOT = Path(__file__).resolve().parent.parent

GOOD_PARAMS = """
[protein_config]
metric = "score"
[protein_config.parameters."trainer.optimizer.learning_rate"]
distribution = "log_normal"
min = 1e-5
max = 1e-2
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("name", ["quick_test", "ppo", "ppo_arena", "demo"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIG_DIR / f"{name}.toml")
    assert config.max_trials >= 1 and config.protein_config.parameters


def test_ppo_configs_use_the_seed_paths() -> None:
    params = load_config(CONFIG_DIR / "ppo.toml").protein_config.parameters
    for path in [
        "trainer.optimizer.learning_rate",
        "trainer.losses.loss_configs.ppo.clip_coef",
        "trainer.losses.loss_configs.ppo.ent_coef",
        "trainer.losses.loss_configs.ppo.gae_lambda",
        "trainer.losses.loss_configs.ppo.vf_coef",
    ]:
        assert path in params


def test_custom_sweep_in_python_like_the_seed() -> None:
    protein = ProteinConfig(
        metric="evaluator/eval_arena/score",
        goal="maximize",
        method="bayes",
        parameters={
            "trainer": {
                "optimizer": {
                    "learning_rate": ParameterConfig(min=1e-5, max=1e-2, distribution="log_normal", mean=1e-3)
                }
            },
            "trainer.batch_size": ParameterConfig(min=16, max=256, distribution="uniform_pow2", mean=64),
        },
        settings=ProteinSettings(num_random_samples=3, max_suggestion_cost=600),
    )
    config = SweepConfig(sweep_name="custom", protein_config=protein, max_trials=5, max_parallel_jobs=2)
    assert set(config.protein_config.parameters) == {"trainer.optimizer.learning_rate", "trainer.batch_size"}
    assert config.timeout == 1200


def test_a_toml_syntax_error_quotes_its_line_and_a_null_gets_a_hint(tmp_path: Path) -> None:
    from orchestrator.config import ConfigError

    path = write(tmp_path, "max_trials = 4\nmax_consecutive_failures = null\n" + GOOD_PARAMS)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "at line 2" in str(err.value) and "max_consecutive_failures = null" in str(err.value)
    assert "TOML has no null" in str(err.value)
    assert load_config(write(tmp_path, "max_consecutive_failures = 0\n" + GOOD_PARAMS)).max_consecutive_failures == 0
    with pytest.raises(ConfigError, match="cannot read .*at line 1") as err:
        load_config(write(tmp_path, "max_trials = = 4\n" + GOOD_PARAMS))
    assert "max_trials = = 4" in str(err.value) and "null" not in str(err.value)


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "max_trials = 3\nmax_parallel_jobs = 2\n" + GOOD_PARAMS)
    monkeypatch.setenv("SWEEP_MAX_TRIALS", "7")
    monkeypatch.setenv("SWEEP_MAX_PARALLEL_JOBS", "4")
    config = load_config(path, parse_assignments(["max_parallel_jobs=5"], "--args"))
    assert config.max_trials == 7  # env beats file
    assert config.max_parallel_jobs == 5  # command line beats env


def test_assignments_reach_nested_and_dotted_fields(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_PARAMS)
    config = load_config(
        path,
        parse_assignments(
            [
                "protein_config.parameters.trainer.optimizer.learning_rate.max=0.5",
                "protein_config.settings.num_random_samples=4",
                "dispatcher_type=local",
                'train_overrides={"trainer.total_timesteps": 1000}',
            ],
            "--overrides",
        ),
    )
    assert config.protein_config.parameters["trainer.optimizer.learning_rate"].max == 0.5
    assert config.protein_config.settings.num_random_samples == 4
    assert config.train_overrides == {"trainer.total_timesteps": 1000}


def test_serve_sizes_the_initial_design_from_max_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.runtime import build_service

    monkeypatch.chdir(tmp_path)  # the sweep's directory goes under ./train_dir
    short = load_config(write(tmp_path, "max_trials = 9\n" + GOOD_PARAMS), {"wandb": {"mode": "disabled"}})
    service = build_service(short)
    dim = len(short.protein_config.parameters)
    assert service.optimizer.initial_design_size() == 1 + max(dim + 1, 9 // 3)  # type: ignore[attr-defined]
    service.store.close()


BAD = [
    ("min >= max", 'distribution = "uniform"\nmin = 2.0\nmax = 1.0', "min (2.0) must be less than max (1.0)"),
    ("log touching 0", 'distribution = "log_normal"\nmin = 0.0\nmax = 1.0', "log_normal needs min > 0"),
    ("logit outside", 'distribution = "logit_normal"\nmin = 0.5\nmax = 1.0', "logit_normal needs 0 < min < max < 1"),
    ("mean outside", 'distribution = "uniform"\nmin = 0.0\nmax = 1.0\nmean = 3.0', "mean (3.0) must lie within"),
    ("unknown distribution", 'distribution = "gaussian"\nmin = 0.0\nmax = 1.0', "distribution"),
    ("unknown field", 'distribution = "uniform"\nmin = 0.0\nmax = 1.0\nsacle = 1', "sacle: unknown field"),
]


@pytest.mark.parametrize("label,body,message", BAD, ids=[b[0] for b in BAD])
def test_bad_parameters_get_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, body: str, message: str
) -> None:
    path = write(tmp_path, f'[protein_config]\nmetric = "score"\n[protein_config.parameters.lr]\n{body}\n')
    code = main(["serve", "--sweep", "bad", "--config", str(path), "--train-dir", str(tmp_path / "td")])
    err = capsys.readouterr().err
    assert code == 2
    assert "protein_config.parameters.lr" in err and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["max_trials=0"], "max_trials: Input should be greater than or equal to 1"),
        (["max_paralel_jobs=2"], "max_paralel_jobs: unknown field"),
        (["noequals"], "expected key=value"),
        (["dispatcher_type=moon"], "dispatcher_type 'moon' names 'moon', which is not installed"),
    ],
)
def test_bad_command_line_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = write(tmp_path, GOOD_PARAMS)
    code = main(["serve", "--sweep", "bad", "--config", str(path), "--train-dir", str(tmp_path), "--args", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_sweep_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD_PARAMS)
    assert main(["serve", "--sweep", "has space", "--config", str(path), "--train-dir", str(tmp_path)]) == 2
    assert "sweep_name: use letters, digits" in capsys.readouterr().err


def test_missing_sweep_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--sweep", "nowhere", "--train-dir", str(tmp_path)]) == 2
    assert "no configs/nowhere.toml" in capsys.readouterr().err


def test_remote_bind_needs_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD_PARAMS)
    assert (
        main(
            [
                "serve",
                "--sweep",
                "x",
                "--config",
                str(path),
                "--train-dir",
                str(tmp_path),
                "--args",
                "http_host=0.0.0.0",
            ]
        )
        == 2
    )
    assert "set http_token" in capsys.readouterr().err


def test_a_real_process_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[protein_config]\n[protein_config.parameters.lr]\ndistribution = "uniform"\nmin = 1\nmax = 0\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", "--sweep", "x", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "min (1.0) must be less than max (0.0)" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["--help"], ["serve", "--help"], ["status", "--help"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    assert "--sweep" in capsys.readouterr().out or command == ["--help"]


def test_a_categorical_takes_its_center_from_its_choices() -> None:
    param = ParameterConfig(distribution="categorical", choices=["tanh", "relu"], mean="relu")
    assert search_center(param) == "relu"
    with pytest.raises(ValueError, match="mean must be a number"):
        ParameterConfig(distribution="uniform", min=0, max=1, mean="0.5x")


def test_dryrun_shows_the_first_job_as_serve_would_run_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD_PARAMS + "mean = 1e-3\n")
    assert main(["dryrun", "--sweep", "dry", "--config", str(path), "--train-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dry_trial_0001.train.1 would run" in out
    assert "recipes.cartpole.train --args run=dry_trial_0001 --overrides trainer.optimizer.learning_rate=0.001" in out
    assert not (tmp_path / "dry" / "events.db").exists()  # nothing was started or recorded


def test_dryrun_catches_a_command_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD_PARAMS)
    code = main(["dryrun", "--sweep", "dry", "--config", str(path), "--args", 'command=["no-such-python"]'])
    assert code == 2 and "'no-such-python' is not an executable program" in capsys.readouterr().err
