"""Third-party dispatchers: the separate package tests/plugins/echo_dispatcher is installed (into a temporary
directory, with its dist metadata, so its entry point is found; the venv is untouched) and whole sweeps run
through it with the real service; a plugin that raises or hangs fails its job with a reason, the sweep goes on."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, serve
from tests.fakes.sweeps import stored, write_toy_sweep


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --target`` of the plugin package: its code and its ``.dist-info`` (entry points)."""
    work = tmp_path_factory.mktemp("plugin")
    src = work / "src"
    shutil.copytree(ROOT / "tests" / "plugins" / "echo_dispatcher", src)  # build debris stays out of the repo
    site = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    assert list(site.glob("echo_dispatcher-*.dist-info/entry_points.txt"))
    return site


def test_the_plugin_is_found_through_its_entry_point(plugin_site: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from dispatchers.registry import available, "
        "load_dispatcher; print(sorted(available())); print(type(load_dispatcher('echo')).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(plugin_site)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "'echo'" in out and "EchoDispatcher" in out


def test_a_whole_sweep_runs_through_the_plugin(tmp_path: Path, plugin_site: Path) -> None:
    write_toy_sweep(tmp_path / "sweep.toml", "echo", max_trials=3)
    proc = serve("plug", tmp_path, pythonpath=[plugin_site])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    state, events = stored(tmp_path, "plug")
    assert state.finished
    assert [t.status for t in state.shown_trials()] == ["completed"] * 3
    assert {j.dispatcher for t in state.shown_trials() for j in t.jobs} == {"echo"}
    submitted = [e for e in events if e.type == "JobSubmitted"]
    assert len(submitted) == 6 and all(e.handle["dir"].endswith(e.key) for e in submitted)
    assert "[echo] Epoch" in out  # the plugin's Output lines reach the service's log


def test_per_kind_routing_mixes_the_plugin_with_the_local_dispatcher(tmp_path: Path, plugin_site: Path) -> None:
    write_toy_sweep(tmp_path / "sweep.toml", "train=echo,eval=local", max_trials=2)
    proc = serve("mix", tmp_path, pythonpath=[plugin_site])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    state, _ = stored(tmp_path, "mix")
    assert [t.status for t in state.shown_trials()] == ["completed"] * 2
    assert {(j.kind, j.dispatcher) for t in state.shown_trials() for j in t.jobs} == {
        ("train", "echo"),
        ("eval", "local"),
    }


def test_a_plugin_that_raises_or_hangs_fails_its_job_and_the_service_lives_on(
    tmp_path: Path, plugin_site: Path
) -> None:
    options = (
        '\n[dispatcher_options.echo]\nraise_on = "_trial_0001.train"\nhang_on = "_trial_0002.train"\ncall_timeout = 2\n'
    )
    write_toy_sweep(tmp_path / "sweep.toml", "echo", options, max_trials=4, parallel=2)
    proc = serve("bad", tmp_path, pythonpath=[plugin_site])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    state, _ = stored(tmp_path, "bad")
    assert state.finished
    trials = state.shown_trials()
    assert [t.status for t in trials] == ["failed", "failed", "completed", "completed"]
    assert "echo refuses bad_trial_0001.train.1" in trials[0].reason
    assert "dispatcher 'echo'" in trials[1].reason and "did not return within 2 s" in trials[1].reason


def test_a_plugin_whose_watch_hangs_fails_that_job_after_watch_grace_and_it_is_cancelled(
    tmp_path: Path, plugin_site: Path
) -> None:
    """``watch`` never yields: the service gives up at job_timeout + watch_grace (counted from the request),
    cancels the job through the plugin, fails it with a reason saying so, and the sweep finishes."""
    options = '\n[dispatcher_options.echo]\nhang_watch_on = "_trial_0001.train"\n'
    write_toy_sweep(tmp_path / "sweep.toml", "echo", options, max_trials=3, parallel=2)
    t0 = time.monotonic()
    proc = serve("hang", tmp_path, "--args", "job_timeout=4", "watch_grace=1", pythonpath=[plugin_site])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert time.monotonic() - t0 < 60  # bounded by the 5 s limit, not the default 60 s grace
    state, events = stored(tmp_path, "hang")
    assert state.finished
    trials = state.shown_trials()
    assert [t.status for t in trials] == ["failed", "completed", "completed"]
    assert "watch_grace 1 s" in trials[0].reason and "presumed hung, cancelled" in trials[0].reason
    assert "dispatcher 'echo'" in trials[0].reason
    (exited,) = [e for e in events if e.type == "JobExited" and e.key == "hang_trial_0001.train.1"]
    assert exited.exit_code is None
    jobs = tmp_path / "train_dir" / ".echo"
    assert (jobs / "hang_trial_0001.train.1" / "cancelled").exists()  # the service cancelled the hung job
    assert not (jobs / "hang_trial_0002.train.1" / "cancelled").exists()


def test_a_plugin_that_cannot_be_loaded_stops_the_sweep_at_start_up_with_its_name(tmp_path: Path) -> None:
    write_toy_sweep(tmp_path / "sweep.toml", "echo")  # not installed in this run
    proc = serve("none", tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "'echo'" in out and "not installed" in out and "Traceback" not in out


def test_the_service_throttles_progress_for_every_dispatcher_and_keeps_the_last(
    tmp_path: Path, plugin_site: Path
) -> None:
    # 200 progress lines in well under a second, through the plugin and through the local dispatcher
    write_toy_sweep(tmp_path / "sweep.toml", "train=echo,eval=local", max_trials=1, steps=200, step_seconds=0.0)
    proc = serve("throttle", tmp_path, pythonpath=[plugin_site])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    _, events = stored(tmp_path, "throttle")
    progress = [e for e in events if e.type == "JobProgress" and e.key.endswith(".train.1")]
    assert 1 <= len(progress) < 200  # at most one a second per job ...
    assert progress[-1].step == progress[-1].total  # ... and the last one is never dropped
    steps = [e.step for e in progress]
    assert steps == sorted(steps)
