"""The front door: the commands a new user types first, run as written, as real processes.

Every shipped sweep definition runs one real trial; the seed's command shape names the sweep; a sweep that
cannot work is refused before its first trial (preflight) or stops early, and says why; the exit codes tell a
script what happened.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from orchestrator import events as ev
from orchestrator.config import CONFIG_DIR
from orchestrator.reducer import fold
from stores.sqlite import SQLiteStore
from tests.conftest import run_orchestrator, serve_env

SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
SHORT_TRAINING = {"recipes.cartpole": ["train_overrides.trainer.total_timesteps=2048"], "recipes.toy": []}


orchestrator = run_orchestrator


def events(cwd: Path, sweep: str) -> list[ev.Event]:
    store = SQLiteStore(cwd / "train_dir" / sweep / "events.db")
    try:
        return [s.event for s in store.read(0)]
    finally:
        store.close()


def test_the_shipped_configs_are_all_tested() -> None:
    assert {"quick_test", "demo", "ppo", "ppo_arena"} <= set(SHIPPED)


@pytest.mark.parametrize("definition", SHIPPED)
def test_every_shipped_config_runs_a_trial_as_shipped(definition: str, tmp_path: Path) -> None:
    # As shipped: the definition's own recipe, search space and dispatcher; only training is made short.
    recipe = tomllib.loads((CONFIG_DIR / f"{definition}.toml").read_text()).get("recipe_module", "recipes.cartpole")
    name = f"front_{definition}"
    done = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        definition,
        "--log-format",
        "human",
        "--args",
        f"sweep_name={name}",
        "max_trials=1",
        "--overrides",
        *SHORT_TRAINING[recipe],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = fold(events(tmp_path, name))
    assert state.finished and state.completed == 1 and state.failed == 0
    assert f"Starting sweep {name}: 1 trials" in done.stdout
    assert "preflight: train command line checked" in done.stdout
    assert "[SweepOrchestrator] Sweep finished: best is trial_0001" in done.stdout
    assert not (tmp_path / "train_dir" / definition).exists()  # the sweep is named sweep_name, not DEFINITION


def test_the_seed_command_shape_names_runs_and_resumes_the_sweep(tmp_path: Path) -> None:
    args = ["serve", "--sweep", "quick_test", "--args", "sweep_name=my_test_sweep", "max_trials=2"]
    first = orchestrator(tmp_path, *args, "--log-format", "human")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "train_dir").iterdir() if p.is_dir())[0] == "my_test_sweep"
    assert not (tmp_path / "train_dir" / "quick_test").exists()
    created = events(tmp_path, "my_test_sweep")[0]
    assert isinstance(created, ev.SweepCreated) and created.sweep == "my_test_sweep"
    # status takes the sweep's name; the same serve command with a bigger budget resumes (extends) it
    status = orchestrator(tmp_path, "status", "--sweep", "my_test_sweep")
    assert status.returncode == 0 and "my_test_sweep: finished, 2/2 trials done" in status.stdout
    again = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=my_test_sweep",
        "max_trials=3",
        "--log-format",
        "human",
    )
    assert again.returncode == 0, again.stderr
    assert "Resuming sweep my_test_sweep: 2/2 trials done" in again.stdout
    state = fold(events(tmp_path, "my_test_sweep"))
    assert state.finished and state.numbered == 3
    # the sweep's own name works too: its definition is in its log
    dry = orchestrator(tmp_path, "dryrun", "--sweep", "my_test_sweep")
    assert dry.returncode == 0 and "my_test_sweep_trial_0001.train.1 would run" in dry.stdout, dry.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--args", "sweep_name=../../x"],
        ["--args", "sweep_name=a;touch /tmp/p"],
        ["--args", "sweep_name="],
        ["--overrides", "sweep_name=has space"],
    ],
)
def test_a_bad_sweep_name_is_refused_naming_the_field(argv: list[str], tmp_path: Path) -> None:
    for command in ("serve", "dryrun"):
        done = orchestrator(tmp_path, command, "--sweep", "quick_test", *argv)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: sweep_name:") and "Traceback" not in done.stderr
    assert not (tmp_path / "train_dir").exists()
    bad = orchestrator(tmp_path, "status", "--sweep", "../etc")
    assert bad.returncode == 2 and "sweep_name" in bad.stderr


def test_help_shows_both_command_forms(tmp_path: Path) -> None:
    done = orchestrator(tmp_path, "serve", "--help")
    assert "serve --sweep quick_test\n" in done.stdout
    assert "serve --sweep quick_test --args sweep_name=my_test_sweep max_trials=5" in done.stdout
    assert "exit codes:" in done.stdout


def test_dotted_keys_inside_mapping_fields(tmp_path: Path) -> None:
    done = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=dots",
        "max_trials=1",
        "--overrides",
        "train_overrides.toy.steps=3",
        "eval_overrides.toy.note=seen",
        "dispatcher_options.local.poll_interval=0.1",
    )
    assert done.returncode == 0, done.stderr
    log = events(tmp_path, "dots")
    config = log[0].config  # type: ignore[union-attr]
    assert config["train_overrides"] == {"toy.steps": 3}
    assert config["eval_overrides"] == {"toy.note": "seen"}
    assert config["dispatcher_options"] == {"local": {"poll_interval": 0.1}}
    argv = {e.kind: e.argv for e in log if isinstance(e, ev.JobRequested)}
    assert "toy.steps=3" in argv["train"] and "toy.note=seen" in argv["eval"]
    assert not any(a.startswith("toy={") for a in argv["train"])


def test_a_new_sweep_draws_a_seed_records_it_and_keeps_it_on_resume(tmp_path: Path) -> None:
    seeds = []
    for name in ("seed_a", "seed_b"):
        done = orchestrator(tmp_path, "serve", "--sweep", "quick_test", "--args", f"sweep_name={name}", "max_trials=1")
        assert done.returncode == 0, done.stderr
        seeds.append(events(tmp_path, name)[0].config["seed"])  # type: ignore[union-attr]
    assert all(isinstance(s, int) for s in seeds) and seeds[0] != seeds[1]
    resumed = orchestrator(tmp_path, "serve", "--sweep", "quick_test", "--args", "sweep_name=seed_a", "max_trials=2")
    assert resumed.returncode == 0, resumed.stderr
    resumes = [e for e in events(tmp_path, "seed_a") if isinstance(e, ev.SweepResumed)]
    assert resumes and resumes[-1].config["seed"] == seeds[0]  # type: ignore[index]
    fixed = orchestrator(
        tmp_path, "serve", "--sweep", "quick_test", "--args", "sweep_name=seed_c", "max_trials=1", "seed=1234"
    )
    assert fixed.returncode == 0 and events(tmp_path, "seed_c")[0].config["seed"] == 1234  # type: ignore[union-attr]


# -- preflight ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field", "runner_says"),
    [
        ('train_overrides={"toy.nope": 1}', "train_overrides.toy.nope", "unknown override 'toy.nope'"),
        ("eval_overrides.toy.steps=many", "eval_overrides.toy.steps", "invalid value 'many' for override 'toy.steps'"),
        (
            "protein_config.parameters.toy.nope.distribution=uniform",
            "protein_config.parameters.toy.nope",
            "unknown override 'toy.nope'",
        ),
    ],
)
def test_preflight_refuses_a_sweep_whose_jobs_would_all_fail(
    override: str, field: str, runner_says: str, tmp_path: Path
) -> None:
    extra = ["protein_config.parameters.toy.nope.min=0", "protein_config.parameters.toy.nope.max=1"]
    extra = extra if "parameters" in override else []
    for command in ("serve", "dryrun"):
        done = orchestrator(
            tmp_path, command, "--sweep", "quick_test", "--args", "sweep_name=pre", "--overrides", override, *extra
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith(f"error: {field}: preflight:"), done.stderr
        assert runner_says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "train_dir" / "pre" / "events.db").exists()  # no trial spent, nothing recorded


def sky_overrides(state_dir: Path, clouds: str) -> list[str]:
    return [
        "dispatcher_type=skypilot",
        "dispatcher_options.skypilot.sdk=tests.fakes.sky:FakeSky",
        f"dispatcher_options.skypilot.sdk_options.state_dir={state_dir}",
        f"dispatcher_options.skypilot.sdk_options.clouds={clouds}",
        "dispatcher_options.skypilot.launch_mode=cluster",
    ]


def test_preflight_on_skypilot_needs_an_enabled_cloud(tmp_path: Path) -> None:
    state_dir = tmp_path / "sky"
    done = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=nocloud",
        "--overrides",
        *sky_overrides(state_dir, "[]"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no cloud is enabled in SkyPilot" in done.stderr and "sky check" in done.stderr
    assert not (tmp_path / "train_dir" / "nocloud" / "events.db").exists()


def test_a_skypilot_dryrun_leaves_the_api_server_as_it_found_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "sky"
    server = state_dir / "api_server"  # the fake's local API server: any SDK request starts it
    args = [
        "dryrun",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=dry",
        "--overrides",
        *sky_overrides(state_dir, '["aws"]'),
    ]
    done = orchestrator(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "preflight: SkyPilot can launch on aws" in done.stdout
    assert "Dry run of dry_trial_0001.train.1" in done.stdout
    assert "stopped SkyPilot's local API server again (this dry run started it)" in done.stdout
    assert not server.exists()
    server.touch()  # running before the dry run: someone else's, left running
    again = orchestrator(tmp_path, *args)
    assert again.returncode == 0 and server.exists() and "stopped" not in again.stdout


def test_a_local_dryrun_takes_args_and_overrides(tmp_path: Path) -> None:
    done = orchestrator(
        tmp_path,
        "dryrun",
        "--sweep",
        "ppo_arena",
        "--args",
        "sweep_name=arena",
        "--overrides",
        "train_overrides.trainer.total_timesteps=2048",
    )
    assert done.returncode == 0, done.stderr
    assert "preflight: train command line checked against recipes.cartpole" in done.stdout
    assert "trainer.total_timesteps=2048" in done.stdout and "trainer.batch_size=64" in done.stdout
    assert not (tmp_path / "train_dir" / "arena" / "events.db").exists()


# -- a doomed sweep stops ----------------------------------------------------------------------------------------


def test_a_doomed_sweep_stops_with_its_reason_and_resumes_once_fixed(tmp_path: Path) -> None:
    base = [
        "serve",
        "--sweep",
        "quick_test",
        "--log-format",
        "human",
        "--args",
        "sweep_name=doomed",
        "max_trials=10",
        "retry_backoff=0",
    ]
    done = orchestrator(tmp_path, *base, "--overrides", "train_overrides.toy.fail_mode=crash")
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr
    # two jobs run at once, so the failure that lands beside the third can make the streak 4 when it stops
    stopped = re.search(
        r"stopped: (\d+) trials in a row failed for the same reason \(max_consecutive_failures=3\)", done.stderr
    )
    assert stopped and 3 <= int(stopped.group(1)) <= 4, done.stderr  # at most one more than the limit
    assert "RuntimeError: toy train crashed on purpose" in done.stderr  # the line that explains it
    assert "serve --sweep quick_test --args sweep_name=doomed" in done.stderr  # how to resume
    log = events(tmp_path, "doomed")
    state = fold(log)
    assert isinstance(log[-1], ev.SweepStopped) and state.stopped == log[-1].reason
    assert state.failed >= 3 and state.numbered < 10 and not state.finished
    # the summary and status keep the error line, not a cut-off path
    assert "reason: train failed after 2 attempts: exited with code 1: RuntimeError: toy train crashed" in done.stdout
    status = orchestrator(tmp_path, "status", "--sweep", "doomed")
    assert "stopped" in status.stdout and "RuntimeError: toy train crashed on purpose" in status.stdout
    # fixed: the same command (with the fix) resumes, and now the sweep completes
    fixed = orchestrator(tmp_path, *base, "max_trials=6", "--overrides", "train_overrides.toy.fail_mode=none")
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr
    state = fold(events(tmp_path, "doomed"))
    assert state.finished and state.completed >= 1 and state.stopped is None


def test_a_usage_error_in_a_job_is_not_retried(tmp_path: Path) -> None:
    # exit code 2 from the job itself (the preflight cannot see it: the recipe decides it while running)
    done = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=usage",
        "max_trials=2",
        "max_retries=3",
        "--overrides",
        "train_overrides.toy.fail_mode=exit",
        "train_overrides.toy.exit_code=2",
    )
    assert done.returncode == 1, done.stderr  # finished with no completed trial
    state = fold(events(tmp_path, "usage"))
    assert state.finished and state.failed == 2
    for trial in state.shown_trials():
        assert [j.attempt for j in trial.jobs] == [1]
        assert "usage error, exit code 2, not retried" in (trial.reason or "")


def test_serve_exits_1_when_no_trial_completed(tmp_path: Path) -> None:
    done = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=none",
        "max_trials=2",
        "retry_backoff=0",
        "--overrides",
        "train_overrides.toy.fail_mode=crash",
    )
    assert done.returncode == 1, done.stderr
    assert "Best run: none (no trial completed)" in done.stdout


# -- the status views --------------------------------------------------------------------------------------------


def test_status_says_when_serve_is_down(tmp_path: Path) -> None:
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--sweep",
            "quick_test",
            "--args",
            "sweep_name=down",
            "max_trials=4",
            "max_parallel_jobs=1",
            "--overrides",
            "train_overrides.toy.step_seconds=0.5",
        ],
        cwd=tmp_path,
        env=serve_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = tmp_path / "train_dir" / "down" / "events.db"
    deadline = time.monotonic() + 60
    while not (db.exists() and any(isinstance(e, ev.JobStarted) for e in events(tmp_path, "down"))):
        assert time.monotonic() < deadline and serve.poll() is None
        time.sleep(0.1)
    running = orchestrator(tmp_path, "status", "--sweep", "down")
    assert "down: in progress, 0/4 trials done" in running.stdout, running.stdout
    serve.send_signal(signal.SIGKILL)
    serve.wait()
    down = orchestrator(tmp_path, "status", "--sweep", "down")
    assert "down: serve is not running, 0/4 trials done" in down.stdout, down.stdout
    resumed = orchestrator(tmp_path, "serve", "--sweep", "quick_test", "--args", "sweep_name=down")
    assert resumed.returncode == 0, resumed.stderr


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: enough of VT100 for rich's Live (erase line, cursor up/down)."""
    rows: list[str] = [""]
    row = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", output):
        if token == "\n":
            row += 1
            if row == len(rows):
                rows.append("")
        elif token == "\r":
            pass  # every write here starts at column 0 in rich's output
        elif token.startswith("\x1b["):
            n = int(re.sub(r"\D", "", token[2:-1]) or 1)
            if token.endswith("A"):
                row = max(0, row - n)
            elif token.endswith("K"):
                rows[row] = ""
        else:
            rows[row] += token
    return [r for r in rows if r.strip()]


def test_status_follow_redraws_in_place_on_a_terminal(tmp_path: Path) -> None:
    serve = orchestrator(tmp_path, "serve", "--sweep", "quick_test", "--args", "sweep_name=tty", "max_trials=2")
    assert serve.returncode == 0
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "status", "--sweep", "tty", "--follow"],
        cwd=tmp_path,
        env=serve_env(COLUMNS="120", LINES="40", TERM="xterm"),
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        assert ready, "status --follow printed nothing for 30 s"
        try:
            data = os.read(master, 65536)
        except OSError:  # the pty closed: the process ended
            break
        if not data:
            break
        chunks.append(data.decode("utf-8", "replace"))
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    os.close(master)
    shown = screen("".join(chunks))
    headlines = [line for line in shown if line.startswith("Sweep tty:")]
    assert len(headlines) == 1, shown  # one table on the screen, however often it was drawn
    assert "finished, 2/2 trials done" in headlines[0]


def test_attach_prints_the_lines_serve_prints(tmp_path: Path) -> None:
    serve = orchestrator(
        tmp_path,
        "serve",
        "--sweep",
        "quick_test",
        "--args",
        "sweep_name=same",
        "max_trials=2",
        "capture_output=false",
        "monitoring_interval=600",
        "--log-format",
        "human",
    )
    assert serve.returncode == 0, serve.stderr
    attach = orchestrator(tmp_path, "attach", "--sweep", "same")
    assert attach.returncode == 0, attach.stderr
    # With the jobs' own output not echoed, serve prints the event lines and the summary: so does attach. Only
    # serve's own start-up lines (its preflight, its event stream's address) are not events.
    served = [line for line in serve.stdout.splitlines() if "preflight:" not in line and "Event stream on" not in line]
    assert attach.stdout.splitlines() == served
    assert re.search(r"\[trial_0001\] eval finished in [\d.]+s: score=", attach.stdout)


def test_the_readme_library_example_runs_as_written() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Tuner(" in b)
    told: list[float] = []

    def loss(params: dict) -> float:  # the README leaves the objective to the reader
        value = (params["lr"] - 3e-3) ** 2 + (0.0 if params["act"] == "tanh" else 1e-4)
        told.append(value)
        return value

    namespace: dict = {"loss": loss, "print": lambda *a: None}
    exec(compile(block, "README.md", "exec"), namespace)
    tuner = namespace["tuner"]
    assert len(told) == len(tuner.observations) == 30
    assert tuner.best().score == min(told) < 1e-4  # it found the tanh side and a learning rate near 3e-3
    assert len({tuple(sorted(o.params.items())) for o in tuner.observations}) == 30  # no point asked twice
