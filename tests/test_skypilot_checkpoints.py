"""Checkpoint hand-over through a bucket (``checkpoint_bucket``): the mount on the task (real SkyPilot types), and
the sync down when a train job ends, again after a restart, and its failure. Against the fake at the SDK
boundary, a local directory standing in for the bucket."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from dispatchers.registry import DispatcherError
from orchestrator.jobs import Exited
from tests.fakes.sky import FakeSky
from tests.test_skypilot import collect, make, spec_for

BUCKET = "s3://my-bucket/sweeps"


@pytest.fixture
def sky_state(tmp_path: Path):
    state = tmp_path / "sky"
    yield state
    FakeSky(state).kill_all()


def test_the_bucket_is_mounted_at_the_jobs_checkpoint_directory(tmp_path: Path, sky_state: Path) -> None:
    from sky.data.storage import StorageMode

    spec = spec_for(tmp_path, key="s_trial_0003.train.1")
    task = make(sky_state, checkpoint_bucket=BUCKET + "/", workdir=str(tmp_path)).build_task(spec)
    ((path, storage),) = task.storage_mounts.items()
    assert path == "~/sky_workdir/train_dir/s_trial_0003/checkpoints"
    assert storage.source == "s3://my-bucket/sweeps/s_trial_0003/checkpoints" and storage.mode == StorageMode.MOUNT
    assert task.to_yaml_config()["file_mounts"][path] == {"source": storage.source, "persistent": True, "mode": "MOUNT"}
    no_workdir = make(sky_state, checkpoint_bucket=BUCKET).build_task(spec)
    assert list(no_workdir.storage_mounts) == ["~/train_dir/s_trial_0003/checkpoints"]
    assert not make(sky_state).build_task(spec).storage_mounts


def test_a_bucket_that_is_not_a_uri_is_named_with_the_fix(sky_state: Path) -> None:
    with pytest.raises(DispatcherError, match=r"checkpoint_bucket: 'my-bucket' is not a bucket URI.*s3://"):
        make(sky_state, checkpoint_bucket="my-bucket")


def run_and_watch_twice(tmp_path: Path, sky_state: Path, argv: list[str]) -> tuple[Any, list[Any], list[Any]]:
    """Run a train job, watch it to its end, then watch it again as a restarted service would."""

    async def main() -> tuple[Any, list[Any], list[Any]]:
        options = {"state_dir": str(sky_state), "bucket_root": str(tmp_path / "cloud")}
        d = make(sky_state, python=sys.executable, checkpoint_bucket=BUCKET, sdk_options=options)
        spec = dataclasses.replace(spec_for(tmp_path, argv=argv), cwd=tmp_path / "here")
        handle = await d.submit(spec)
        first = await collect(d, spec, handle)
        again = make(sky_state, python=sys.executable, checkpoint_bucket=BUCKET, sdk_options=options)
        return spec, first, await collect(again, spec, handle)

    return anyio.run(main)


def test_a_finished_train_job_syncs_its_checkpoints_down_and_again_after_a_restart(
    tmp_path: Path, sky_state: Path
) -> None:
    writer = tmp_path / "writer.py"  # the train job: writes two checkpoints where the job contract says
    writer.write_text(
        "import pathlib\n"
        "d = pathlib.Path('train_dir/s_trial_0001/checkpoints')\n"
        "d.mkdir(parents=True, exist_ok=True)\n"
        "for step in (1, 2):\n"
        "    (d / f'model_{step}.json').write_text(str(step))\n"
    )
    spec, first, again = run_and_watch_twice(tmp_path, sky_state, [sys.executable, str(writer)])
    local = tmp_path / "here" / "train_dir" / "s_trial_0001" / "checkpoints"
    for updates in (first, again):
        assert isinstance(updates[-1], Exited) and updates[-1].exit_code == 0, updates
        assert any("syncing the checkpoints of s_trial_0001 down" in str(getattr(u, "line", "")) for u in updates)
    assert sorted(p.name for p in local.iterdir()) == ["model_1.json", "model_2.json"]
    assert (local / "model_2.json").read_text() == "2"
    bucket = tmp_path / "cloud" / "my-bucket" / "sweeps" / "s_trial_0001" / "checkpoints"
    assert sorted(p.name for p in bucket.iterdir()) == ["model_1.json", "model_2.json"]


def test_a_sync_that_fails_names_the_bucket_and_the_cause(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> None:
        options = {"state_dir": str(sky_state), "bucket_root": str(tmp_path / "cloud"), "poll_s": 0.02}
        d = make(sky_state, python=sys.executable, checkpoint_bucket=BUCKET, sdk_options=options, api_retries=0)
        spec = dataclasses.replace(spec_for(tmp_path), cwd=tmp_path / "here")  # not the checkout's train_dir
        handle = await d.submit(spec)
        # the bucket vanishes before the job ends (a lifecycle rule, a typo in another sweep...)
        fake = FakeSky(sky_state, bucket_root=str(tmp_path / "cloud"))
        while fake.job(handle.data["job_id"])["status"] != "RUNNING":
            await anyio.sleep(0.02)
        import shutil

        shutil.rmtree(tmp_path / "cloud")
        await collect(d, spec, handle)

    with pytest.raises(DispatcherError, match=r"checkpoints of s_trial_0001 could not be synced down from "):
        anyio.run(main)
