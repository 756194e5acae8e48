"""The SkyPilot dispatcher.

Real SkyPilot (no cloud): its Task and Resources built from sweep options and round-tripped through YAML, and a
dry run of a real sweep config through the real client, local API server and optimizer (``test_dry_run_*``).

Against the fake at the SDK boundary (``tests/fakes/sky.py``, SkyPilot's own records and statuses, jobs really
run as processes): the life cycle, a restart that reattaches, a preempted job that SkyPilot recovers, cancel,
failures, cluster mode and a launch command template.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from dispatchers.registry import DispatcherError, build_dispatcher
from dispatchers.skypilot import SkyPilotDispatcher, job_name
from orchestrator.jobs import Exited, JobSpec, Output, Progress, Started
from tests.fakes.sky import FakeSky

ROOT = Path(__file__).resolve().parent.parent

JOB = textwrap.dedent(
    """
    import json, os, sys, time
    steps = int(os.environ.get("STEPS", "4")); pause = float(os.environ.get("PAUSE", "0.1"))
    for i in range(1, steps + 1):
        print(f"Epoch {i} / 1000 sps / {100 * i / steps:.2f}% of {steps / 1000:.3f} ksteps", flush=True)
        time.sleep(pause)
    code = int(os.environ.get("EXIT", "0"))
    if code == 0:
        print("SWEEP_RESULT " + json.dumps({"score": 0.5, "argv": sys.argv[1:]}), flush=True)
    sys.exit(code)
    """
)


class ThreadCheckingSky(FakeSky):
    """The fake, refusing any call made on the event loop's thread (every SDK call must run in a worker)."""

    main = threading.main_thread()

    def __getattribute__(self, name: str) -> Any:
        if name in (
            "launch_managed",
            "managed_jobs",
            "tail_managed_logs",
            "cancel_managed",
            "launch_cluster",
            "cluster_jobs",
            "tail_cluster_logs",
            "cancel_cluster",
            "requests_in_flight",
            "wait_request",
        ):
            if threading.current_thread() is ThreadCheckingSky.main:
                raise AssertionError(f"SkyPilot SDK call {name} made on the event loop thread")
        return super().__getattribute__(name)


@pytest.fixture
def sky_state(tmp_path: Path):
    state = tmp_path / "sky"
    yield state
    FakeSky(state).kill_all()


def make(state: Path, **options: Any) -> SkyPilotDispatcher:
    opts = {
        "sdk": "tests.test_skypilot:ThreadCheckingSky",
        "sdk_options": {"state_dir": str(state)},
        "poll_interval": 0.05,
        "log_reopen_delay": 0.05,
        **options,
    }
    return SkyPilotDispatcher(name="skypilot", **opts)


def spec_for(
    tmp_path: Path, key: str = "s_trial_0001.train.1", env: dict[str, str] | None = None, argv: list[str] | None = None
) -> JobSpec:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    run = key.split(".")[0]
    return JobSpec(
        key=key,
        sweep="s",
        run=run,
        trial=1,
        kind="train",
        attempt=1,
        argv=argv or [sys.executable, str(script), "--args", f"run={run}", "x=a b$HOME"],
        env=env or {},
        dispatcher="skypilot",
    )


async def collect(dispatcher: SkyPilotDispatcher, spec: JobSpec, handle, limit: float = 30) -> list[Any]:
    out = []
    with anyio.fail_after(limit):
        async for update in dispatcher.watch(spec, handle):
            out.append(update)
    return out


# ---------------------------------------------------------------- options and the task (real SkyPilot types)


def test_unknown_or_bad_options_name_the_option_and_the_fix() -> None:
    with pytest.raises(DispatcherError, match=r"skypilot\.gpu: unknown option; known options: .*gpus"):
        build_dispatcher("skypilot", {"skypilot": {"gpu": "A10G:1"}})
    with pytest.raises(DispatcherError, match=r"gpus: 'A10G x1' is not NAME or NAME:COUNT"):
        SkyPilotDispatcher(gpus="A10G x1")
    with pytest.raises(DispatcherError, match="region needs cloud"):
        SkyPilotDispatcher(region="us-east-1")
    with pytest.raises(DispatcherError, match="launch_mode"):
        SkyPilotDispatcher(launch_mode="spot")
    with pytest.raises(DispatcherError, match=r"unknown placeholder \{job\}"):
        SkyPilotDispatcher(command_template=["launch.py", "{job}"])
    with pytest.raises(DispatcherError, match="cloud"):
        SkyPilotDispatcher(cloud="nosuchcloud")  # SkyPilot's own validation, surfaced at start-up


def test_the_task_runs_the_argv_with_env_and_resources_and_round_trips_through_yaml(
    tmp_path: Path, monkeypatch
) -> None:
    import sky

    monkeypatch.setenv("WANDB_API_KEY", "secret-value")
    d = SkyPilotDispatcher(
        gpus="A10G:1",
        nodes=2,
        use_spot=False,
        cloud="aws",
        region="us-east-1",
        workdir=".",
        setup="pip install -e .",
        env={"WANDB_MODE": "offline"},
        secrets=["WANDB_API_KEY"],
    )
    spec = spec_for(tmp_path, env={"SWEEP_RUN": "s_trial_0001", "HF_TOKEN": "tok"})
    task = d.build_task(spec)
    assert task.name == "s_trial_0001.train.1" == job_name(spec.key)
    assert task.num_nodes == 2 and task.setup == "pip install -e ." and task.workdir == "."
    (res,) = task.resources
    assert res.accelerators == {"A10G": 1} and res.use_spot is False
    assert str(res.cloud).lower() == "aws" and res.region == "us-east-1"
    assert task.envs == {"WANDB_MODE": "offline", "SWEEP_RUN": "s_trial_0001"}
    assert set(task.secrets) == {"WANDB_API_KEY", "HF_TOKEN"}  # secret-looking names never go to plain envs
    # The run command is the argv, quoted item by item; the service's interpreter path becomes `python`.
    out = subprocess.run(
        ["bash", "-c", task.run.replace("python", sys.executable, 1)], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.splitlines()[-1].removeprefix("SWEEP_RESULT "))["argv"] == spec.argv[2:]
    assert task.run.startswith("python ")
    config = task.to_yaml_config()
    again = sky.Task.from_yaml_config(copy.deepcopy(config)).to_yaml_config()
    again.pop("_user_specified_yaml", None)
    assert again == config
    assert config["resources"]["use_spot"] is False and config["resources"]["infra"] == "aws/us-east-1"
    redacted = task.to_yaml_config(use_user_specified_yaml=True)
    assert "secret-value" not in json.dumps(redacted)


def test_job_names_are_stable_and_valid_for_skypilot() -> None:
    import re

    for key in ["me.sweep.05121530_trial_0007.train.1", "a--_b_trial_0001.eval.2", "9lives_trial_0001.train.1"]:
        name = job_name(key)
        assert name == job_name(key)
        assert re.fullmatch(r"[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*", name)  # SkyPilot's task name rule
    assert job_name("me.sweep.05121530_trial_0007.train.1") == "me.sweep.05121530_trial_0007.train.1"


# ---------------------------------------------------------------- life cycle against the fake


def test_a_managed_job_runs_to_success_with_progress_and_result(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> tuple[Any, list[Any]]:
        d = make(sky_state, python=sys.executable)
        spec = spec_for(tmp_path)
        handle = await d.submit(spec)
        assert handle.data["job_id"] == 1 and handle.data["job_name"] == spec.key
        assert await d.submit(spec) == handle  # idempotent on the key
        return handle, await collect(d, spec, handle)

    handle, updates = anyio.run(main)
    assert isinstance(updates[0], Started) and sum(isinstance(u, Started) for u in updates) == 1
    progress = [u for u in updates if isinstance(u, Progress)]
    assert [p.step for p in progress] == [1, 2, 3, 4] and progress[0].total == 4 and progress[0].sps == 1000
    exited = updates[-1]
    assert isinstance(exited, Exited) and exited.exit_code == 0 and exited.error is None
    assert exited.result["score"] == 0.5 and exited.result["argv"][-1] == "x=a b$HOME"
    assert exited.duration > 0
    fake = FakeSky(sky_state)
    assert fake.job(1)["status"] == "SUCCEEDED"
    assert "launch_managed" not in fake.calls  # (a fresh fake: calls are per instance)
    assert len(list((sky_state / "managed").iterdir())) == 1  # launched once


def test_a_restarted_service_finds_the_running_job_by_name_and_reattaches(tmp_path: Path, sky_state: Path) -> None:
    spec = spec_for(tmp_path, env={"STEPS": "8", "PAUSE": "0.15"})

    async def first_life() -> Any:
        d = make(sky_state, python=sys.executable)
        handle = await d.submit(spec)
        with anyio.fail_after(20):
            async for update in d.watch(spec, handle):
                if isinstance(update, Progress):
                    break  # the service dies here: no cancel, the SkyPilot job keeps running
        await d.aclose()
        return handle

    async def second_life() -> tuple[Any, Any, list[Any]]:
        d = make(sky_state, python=sys.executable)  # a new process would build a new dispatcher
        found = await d.find(spec)
        again = await d.submit(spec)
        return found, again, await collect(d, spec, found)

    handle = anyio.run(first_life)
    assert FakeSky(sky_state).job(handle.data["job_id"])["status"] == "RUNNING"
    found, again, updates = anyio.run(second_life)
    assert found == handle == again  # found by its name; submitting again starts nothing
    assert len(list((sky_state / "managed").iterdir())) == 1
    exited = updates[-1]
    assert isinstance(exited, Exited) and exited.exit_code == 0 and exited.result["score"] == 0.5
    assert any(isinstance(u, Started) for u in updates)


LAUNCHER_THAT_DIES = textwrap.dedent(
    """
    # A service in its own process: it submits one job and waits for sky.jobs.launch; the test kills it then.
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import anyio
    from dispatchers.skypilot import SkyPilotDispatcher
    from orchestrator.jobs import JobSpec
    options, spec = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    anyio.run(SkyPilotDispatcher(name="skypilot", **options).submit, JobSpec(**spec))
    """
)


@pytest.mark.parametrize("launch_mode", ["managed", "cluster"])
def test_a_launch_still_in_flight_when_the_service_died_is_waited_for_not_launched_again(
    tmp_path: Path, sky_state: Path, launch_mode: str
) -> None:
    """The service dies while SkyPilot's API server is still processing its launch request: the job is not in
    the queue yet. The next service's find() waits for that request and finds the job it launched; submit()
    starts nothing: exactly one SkyPilot job."""
    spec = spec_for(tmp_path)
    options = {
        "sdk": "tests.fakes.sky:FakeSky",
        "python": sys.executable,
        "launch_mode": launch_mode,
        "sdk_options": {"state_dir": str(sky_state), "launch_s": 4.0},
    }
    spec_json = {
        f: getattr(spec, f) for f in ("key", "sweep", "run", "trial", "kind", "attempt", "argv", "env", "dispatcher")
    }
    script = tmp_path / "first_life.py"
    script.write_text(LAUNCHER_THAT_DIES)
    first = subprocess.Popen([sys.executable, str(script), str(ROOT), json.dumps(options), json.dumps(spec_json)])
    try:
        deadline = time.time() + 60
        while not list((sky_state / "requests").glob("*.json")) if sky_state.exists() else True:
            assert first.poll() is None and time.time() < deadline, "the first service never sent its launch"
            time.sleep(0.05)
    finally:
        first.kill()  # SIGKILL: no cleanup, the launch request stays on the "API server"
        first.wait(timeout=30)
    jobs_dir = sky_state / ("managed" if launch_mode == "managed" else "cluster-sweep-s")
    assert not jobs_dir.exists()  # the request is in flight: no job in SkyPilot's queue yet

    async def second_life() -> tuple[Any, Any, float, list[Any]]:
        d = make(sky_state, python=sys.executable, launch_mode=launch_mode)
        t0 = time.monotonic()
        found = await d.find(spec)
        waited = time.monotonic() - t0
        again = await d.submit(spec)
        return found, again, waited, await collect(d, spec, again)

    found, again, waited, updates = anyio.run(second_life)
    assert found is not None and found.data["job_id"] == 1, "find() did not see the launch in flight"
    assert again == found and waited > 0.5  # it waited for the request rather than launching again
    assert len(list(jobs_dir.iterdir())) == 1  # exactly one SkyPilot job
    assert updates[-1].exit_code == 0 and updates[-1].result["score"] == 0.5


def test_a_launch_that_failed_on_the_api_server_is_launched_again(tmp_path: Path, sky_state: Path) -> None:
    """A launch request in flight that then fails started no job: find() waits for it, finds nothing, and
    submit() launches (once)."""
    spec = spec_for(tmp_path)
    failing = FakeSky(sky_state, launch_s=1.0, fail_launch=True)
    task = make(sky_state, python=sys.executable).build_task(spec)
    thread = threading.Thread(target=lambda: pytest.raises(RuntimeError, failing.launch_managed, task, spec.key))
    thread.start()  # a client waiting for its launch, in the background

    async def main() -> tuple[Any, Any]:
        d = make(sky_state, python=sys.executable)
        while not list((sky_state / "requests").glob("*.json")) if sky_state.exists() else True:
            await anyio.sleep(0.02)
        return await d.find(spec), await d.submit(spec)

    found, handle = anyio.run(main)
    thread.join(timeout=30)
    assert found is None and handle.data["job_id"] == 1
    assert len(list((sky_state / "managed").iterdir())) == 1


def test_find_returns_none_for_a_job_never_launched(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> Any:
        d = make(sky_state)
        await d.submit(spec_for(tmp_path, key="s_trial_0001.train.1"))
        return await d.find(spec_for(tmp_path, key="s_trial_0001.train.10"))  # a name that contains the other

    assert anyio.run(main) is None


def test_a_preempted_spot_job_is_recovered_by_skypilot_and_the_watch_follows_it(
    tmp_path: Path, sky_state: Path
) -> None:
    spec = spec_for(tmp_path, env={"STEPS": "6", "PAUSE": "0.15"})

    async def main() -> tuple[Any, list[Any]]:
        d = make(sky_state, python=sys.executable)
        handle = await d.submit(spec)
        updates, preempted = [], False
        with anyio.fail_after(30):
            async for update in d.watch(spec, handle):
                updates.append(update)
                if isinstance(update, Progress) and update.step >= 1.5 and not preempted:
                    preempted = True
                    await anyio.to_thread.run_sync(FakeSky(sky_state).preempt, handle.data["job_id"])
        return handle, updates

    handle, updates = anyio.run(main)
    job = FakeSky(sky_state).job(handle.data["job_id"])
    assert job["status"] == "SUCCEEDED" and job["recovery_count"] == 1 and job["attempt"] == 2
    lines = [u.line for u in updates if isinstance(u, Output)]
    assert any("preempted and SkyPilot recovered it (recovery 1)" in line for line in lines)
    steps = [round(u.step) for u in updates if isinstance(u, Progress)]
    assert steps.count(1) == 2 and steps[-1] == 6  # progress restarts with the recovered job
    assert sum(isinstance(u, Started) for u in updates) == 1
    exited = updates[-1]
    assert isinstance(exited, Exited) and exited.exit_code == 0 and exited.result["score"] == 0.5


def test_cancel_stops_the_job_and_the_watch_reports_it(tmp_path: Path, sky_state: Path) -> None:
    spec = spec_for(tmp_path, env={"STEPS": "200", "PAUSE": "0.1"})

    async def main() -> list[Any]:
        d = make(sky_state, python=sys.executable)
        handle = await d.submit(spec)
        updates = []
        with anyio.fail_after(20):
            async for update in d.watch(spec, handle):
                updates.append(update)
                if isinstance(update, Progress):
                    await d.cancel(spec, handle)
        await d.cancel(spec, handle)  # safe on a job that already ended
        return updates

    updates = anyio.run(main)
    exited = updates[-1]
    assert isinstance(exited, Exited) and exited.exit_code is None and "CANCELLED" in exited.error
    assert FakeSky(sky_state).job(1)["status"] == "CANCELLED"


def test_a_failing_job_exits_non_zero_with_skypilots_reason(tmp_path: Path, sky_state: Path) -> None:
    spec = spec_for(tmp_path, env={"EXIT": "3", "STEPS": "1"})

    async def main() -> list[Any]:
        d = make(sky_state, python=sys.executable)
        return await collect(d, spec, await d.submit(spec))

    exited = anyio.run(main)[-1]
    assert exited.exit_code == 1 and exited.result is None
    assert "FAILED" in exited.error and "code 3" in exited.error


def test_cluster_mode_runs_jobs_on_the_sweeps_cluster(tmp_path: Path, sky_state: Path) -> None:
    spec = spec_for(tmp_path)

    async def main() -> tuple[Any, list[Any], Any]:
        d = make(sky_state, python=sys.executable, launch_mode="cluster")
        handle = await d.submit(spec)
        updates = await collect(d, spec, handle)
        return handle, updates, await make(sky_state, launch_mode="cluster").find(spec)

    handle, updates, found = anyio.run(main)
    assert handle.data == {"job_id": 1, "mode": "cluster", "cluster": "sweep-s", "job_name": spec.key}
    assert found == handle
    assert updates[-1].exit_code == 0 and updates[-1].result["score"] == 0.5


def test_a_command_template_launches_through_the_users_script_and_the_job_is_followed(
    tmp_path: Path, sky_state: Path
) -> None:
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        textwrap.dedent(
            f"""
        # A user's own launch script, like the seed's devops/skypilot/launch.py: builds a task, launches it.
        import shlex, sys
        sys.path.insert(0, {str(ROOT)!r})
        import sky
        from tests.fakes.sky import FakeSky
        args = sys.argv[1:]
        name = args[args.index("--name") + 1]
        assert args[args.index("--gpus") + 1] == "4" and "--no-spot" in args
        argv = args[args.index("--") + 1:]
        task = sky.Task(name=name, run=shlex.join(argv)).set_resources(sky.Resources(accelerators="H100:4"))
        print("launched", FakeSky({str(sky_state)!r}).launch_managed(task, name))
        """
        )
    )
    spec = spec_for(tmp_path)

    async def main() -> tuple[Any, list[Any]]:
        d = make(
            sky_state,
            python=sys.executable,
            gpus="H100:4",
            use_spot=False,
            command_template=[
                sys.executable,
                str(launcher),
                "--name",
                "{job_name}",
                "--gpus",
                "{gpu_count}",
                "{no_spot}",
                "--",
                "{argv}",
            ],
        )
        handle = await d.submit(spec)
        return handle, await collect(d, spec, handle)

    handle, updates = anyio.run(main)
    assert handle.data["job_name"] == spec.key
    assert updates[-1].exit_code == 0 and updates[-1].result["score"] == 0.5


def test_a_launch_command_that_fails_is_a_clear_error(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> None:
        d = make(sky_state, command_template=[sys.executable, "-c", "import sys; sys.exit('no credentials')"])
        await d.submit(spec_for(tmp_path))

    with pytest.raises(DispatcherError, match="exited with code 1: no credentials"):
        anyio.run(main)


# ---------------------------------------------------------------- a dry run through SkyPilot's real SDK

CATALOG = {
    "common/accelerators.csv": "AcceleratorName,Clouds\nA10G,\"['AWS', 'Fluidstack']\"\n",
    "common/metadata.csv": "GPU,MemoryGB,Manufacturer\nA10G,24,NVIDIA\n",
    "fluidstack/vms.csv": (
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice\n"
        "A10_PCIE_24GB::1,A10G,1,8,32,0.9,norway_4_eu,\"{'Gpus': [{'Name': 'A10G', 'Manufacturer': 'NVIDIA', "
        "'Count': 1, 'MemoryInfo': {'SizeInMiB': 24576}}], 'TotalGpuMemoryInMiB': 24576}\",\n"
    ),
}


@pytest.fixture
def sky_home(tmp_path: Path):
    """A HOME where SkyPilot finds a one-row catalog and one enabled cloud (Fluidstack: its check only reads
    ~/.fluidstack/api_key), so the real optimizer runs offline. The API server it starts is stopped after."""
    if shutil.which("rsync") is None:
        pytest.skip("SkyPilot's launch needs the rsync system package (apt-get install rsync)")
    home = tmp_path / "home"
    for name, text in CATALOG.items():
        path = home / ".sky" / "catalogs" / "v8" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (home / ".fluidstack").mkdir()
    (home / ".fluidstack" / "api_key").write_text("api_key_for_tests\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("SKYPILOT_API_SERVER_ENDPOINT", None)
    yield env
    subprocess.run([str(Path(sys.executable).parent / "sky"), "api", "stop"], env=env, capture_output=True, timeout=60)


def test_dry_run_of_a_real_sweep_config_through_skypilots_real_sdk(tmp_path: Path, sky_home: dict) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        (ROOT / "configs" / "quick_test.toml")
        .read_text()
        .replace('dispatcher_type = "local"', 'dispatcher_type = "hybrid_remote_train"', 1)
        + '\n[train_overrides]\n"toy.steps" = 100\n'
        + '\n[dispatcher_options.skypilot]\ngpus = "A10G:1"\nnodes = 1\nuse_spot = false\n'
        + 'setup = "pip install -e ."\nenv = {WANDB_MODE = "offline"}\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dryrun", "--sweep", "dry.sweep", "--config", str(config)],
        cwd=tmp_path,
        env=sky_home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "task dry.sweep_trial_0001.train.1: python -m orchestrator.run recipes.toy.train" in out
    # The scheduler's own command line: the fixed overrides and the first trial's hyperparameters (the center).
    assert "--overrides toy.steps=100 toy.x=0.0 toy.lr=0.001" in out
    # SkyPilot's optimizer ran and chose the only feasible offer: on-demand A10G on Fluidstack.
    assert "Fluidstack (norway_4_eu)" in out and "A10G:1" in out and "Dryrun finished." in out
    # The preflight asked SkyPilot's real API server for the enabled clouds (running `sky check` on an empty
    # cache), and the dry run stopped the local API server it had started.
    assert "preflight: SkyPilot can launch on fluidstack" in out
    assert "stopped SkyPilot's local API server again (this dry run started it)" in out
    status = [
        sys.executable,
        "-c",
        "from dispatchers.skypilot import SkySDK; print(SkySDK().local_api_server_running())",
    ]
    assert subprocess.run(status, cwd=tmp_path, env=sky_home, capture_output=True, text=True).stdout.strip() == "False"

    # With a local API server already running, a dry run leaves it running.
    sky = str(Path(sys.executable).parent / "sky")
    subprocess.run([sky, "api", "start"], env=sky_home, capture_output=True, text=True, timeout=120, check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dryrun", "--sweep", "dry.sweep", "--config", str(config)],
        cwd=tmp_path,
        env=sky_home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Dryrun finished." in proc.stdout, proc.stdout + proc.stderr
    assert "stopped" not in proc.stdout + proc.stderr

    # The seam's request listing against the same real API server: the field list is accepted, no launch is in
    # flight any more, and the dry run's own `launch` request (as the server lists it, had it still been
    # running) is recognised as the launch of that job on that cluster.
    check = textwrap.dedent(
        """
        from dispatchers.skypilot import SkySDK, launch_request_job_name
        sdk = SkySDK()
        in_flight = sdk.requests_in_flight()  # the server's own daemons are always "RUNNING" requests
        assert in_flight and not [r for r in in_flight if launch_request_job_name(r)], in_flight
        listed = sdk.sky.api_status(all_status=True, fields=list(sdk._REQUEST_FIELDS))
        launch = [r for r in listed if r.name == "sky.launch"][-1]  # this dry run's (the first one's may be listed too)
        sdk.wait_request(launch.request_id)  # finished: returns at once
        print("parsed", launch_request_job_name(launch.model_copy(update={"status": "RUNNING"})))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=sky_home, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parsed ('dry.sweep_trial_0001.train.1', 'sweep-dry-sweep')" in proc.stdout
