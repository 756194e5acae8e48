"""Whole sweeps in hybrid_remote_train mode: train jobs on SkyPilot (the fake at the SDK boundary, selected with
the ``sdk`` testing hook; its jobs really run, detached, in the sweep's directory, as a bucket-mounted train_dir
would make them visible), eval jobs through the real local dispatcher as real subprocesses."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from tests.conftest import serve
from tests.fakes.sky import FakeSky
from tests.fakes.sweeps import stored, write_toy_sweep


def sky_options(state: Path, workdir: Path, extra_sdk_options: str = "") -> str:
    return (
        "\n[dispatcher_options.skypilot]\n"
        'gpus = "A10G:1"\n'
        f'python = "{sys.executable}"\n'
        f'workdir = "{workdir}"\n'
        "poll_interval = 0.1\n"
        'sdk = "tests.fakes.sky:FakeSky"\n'
        f'sdk_options = {{state_dir = "{state}", pending_s = 0.3, starting_s = 0.3{extra_sdk_options}}}\n'
    )


def test_hybrid_sweep_trains_on_skypilot_and_evaluates_locally(tmp_path: Path) -> None:
    state_dir = tmp_path / "sky"
    write_toy_sweep(tmp_path / "sweep.toml", "hybrid_remote_train", sky_options(state_dir, tmp_path), max_trials=3)
    try:
        proc = serve("hy", tmp_path)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        state, events = stored(tmp_path, "hy")
        assert state.finished and [t.status for t in state.shown_trials()] == ["completed"] * 3
        by_kind = {(j.kind, j.dispatcher) for t in state.shown_trials() for j in t.jobs}
        assert by_kind == {("train", "skypilot"), ("eval", "local")}
        fake = FakeSky(state_dir)
        handles = {e.key: e.handle for e in events if e.type == "JobSubmitted"}  # the log keeps every handle
        for job in (j for t in state.shown_trials() for j in t.jobs):
            if job.kind == "train":
                handle = handles[job.key]
                assert handle["mode"] == "managed" and handle["job_name"] == job.key
                sky_job = fake.job(handle["job_id"])
                assert sky_job["status"] == "SUCCEEDED" and sky_job["name"] == job.key
                assert "accelerators:\n    A10G: 1" in fake.task_yaml(handle["job_id"])
                assert job.step is not None  # SkyPilot's log stream became progress events
        assert len(list((state_dir / "managed").iterdir())) == 3  # one SkyPilot job per train, no more
        for trial in state.shown_trials():  # eval read the checkpoint the SkyPilot job wrote
            assert trial.score is not None
    finally:
        FakeSky(state_dir).kill_all()


def test_a_killed_service_reattaches_to_its_running_skypilot_job(tmp_path: Path) -> None:
    state_dir = tmp_path / "sky"
    write_toy_sweep(
        tmp_path / "sweep.toml",
        "hybrid_remote_train",
        sky_options(state_dir, tmp_path),
        max_trials=1,
        parallel=1,
        steps=30,
        step_seconds=0.1,
    )
    try:
        proc = serve("rs", tmp_path)
        fake = FakeSky(state_dir)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the SkyPilot job runs, then kill the service outright
            jobs = list((state_dir / "managed").glob("*/job.json")) if (state_dir / "managed").exists() else []
            if jobs and fake.job(1)["status"] == "RUNNING":
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert fake.job(1)["status"] == "RUNNING"  # the SkyPilot job outlives the service

        proc = serve("rs", tmp_path)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        state, events = stored(tmp_path, "rs")
        assert state.finished and [t.status for t in state.shown_trials()] == ["completed"]
        assert len(list((state_dir / "managed").iterdir())) == 1  # reattached, never launched twice
        assert fake.job(1)["status"] == "SUCCEEDED" and fake.job(1)["attempt"] == 1
    finally:
        FakeSky(state_dir).kill_all()


def test_a_service_killed_while_its_launch_is_in_flight_does_not_launch_the_job_twice(tmp_path: Path) -> None:
    """The service dies while the API server is still processing its ``sky.jobs.launch`` (held in flight by the
    fake until released). The restarted service must wait for that request, not launch the job again."""
    state_dir = tmp_path / "sky"
    write_toy_sweep(
        tmp_path / "sweep.toml",
        "hybrid_remote_train",
        sky_options(state_dir, tmp_path, ", hold_launches = true"),
        max_trials=1,
        parallel=1,
    )
    fake = FakeSky(state_dir)
    try:
        proc = serve("fl", tmp_path)
        deadline = time.time() + 60
        while not fake.launch_requests():
            assert proc.poll() is None and time.time() < deadline, "the service never sent its launch"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert not (state_dir / "managed").exists()  # no job yet: the request is still in flight

        proc = serve("fl", tmp_path)
        deadline = time.time() + 90
        while True:  # until the restarted service waits for the request in flight, or has launched again
            requests = fake.launch_requests()
            if len(requests) > 1 or proc.pid in requests[0].get("waiters", []):
                break
            assert proc.poll() is None and time.time() < deadline, "the restarted service never reached the job"
            time.sleep(0.1)
        assert len(fake.launch_requests()) == 1, "the restarted service launched the job a second time"
        fake.release_launches()
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        state, events = stored(tmp_path, "fl")
        assert [t.status for t in state.shown_trials()] == ["completed"]
        assert len(list((state_dir / "managed").iterdir())) == 1  # exactly one SkyPilot job
        (submitted,) = [e for e in events if e.type == "JobSubmitted" and e.key == "fl_trial_0001.train.1"]
        assert submitted.reattached and submitted.handle["job_id"] == 1
    finally:
        fake.kill_all()


def test_hybrid_checkpoints_reach_the_local_eval_through_the_bucket(tmp_path: Path) -> None:
    """Train jobs run on the "VM" (their own directory, not the sweep's) with the bucket mounted at their
    train_dir/<run>/checkpoints; the local eval reads the checkpoints synced down from the bucket."""
    state_dir, vm, bucket_root = tmp_path / "sky", tmp_path / "vm", tmp_path / "cloud"
    vm.mkdir()
    options = sky_options(state_dir, vm, f', bucket_root = "{bucket_root}"')
    options += 'checkpoint_bucket = "s3://my-bucket/sweeps"\n'
    write_toy_sweep(tmp_path / "sweep.toml", "hybrid_remote_train", options, max_trials=2)
    try:
        proc = serve("ck", tmp_path)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        state, _events = stored(tmp_path, "ck")
        assert [t.status for t in state.shown_trials()] == ["completed"] * 2
        fake = FakeSky(state_dir)
        for trial in state.shown_trials():
            on_vm = vm / "train_dir" / trial.run / "checkpoints"
            in_bucket = bucket_root / "my-bucket" / "sweeps" / trial.run / "checkpoints"
            local = tmp_path / "train_dir" / trial.run / "checkpoints"
            assert on_vm.is_symlink() and on_vm.resolve() == in_bucket.resolve()  # the train job wrote the bucket
            written = sorted(p.name for p in in_bucket.iterdir())
            assert written and sorted(p.name for p in local.iterdir()) == written  # synced down before the eval
            assert not local.is_symlink() and trial.score is not None
        launched = sorted(int(p.name) for p in (state_dir / "managed").iterdir() if p.name.isdigit())
        mounts = [fake.job(job_id)["mounts"] for job_id in launched]  # the trains, in whatever order they went
        assert {
            "~/sky_workdir/train_dir/ck_trial_0001/checkpoints": "s3://my-bucket/sweeps/ck_trial_0001/checkpoints"
        } in mounts
    finally:
        FakeSky(state_dir).kill_all()
