"""The SkyPilot dispatcher with many jobs: one batched status read per interval for all watchers, a bounded number
of launches in flight and of log streams followed, retries with backoff on API errors, and a clear message when
SkyPilot refuses a launch. Against the fake at the SDK boundary, counting its calls."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from dispatchers.registry import DispatcherError
from orchestrator.jobs import Exited, Progress
from tests.fakes.sky import FakeSky
from tests.test_skypilot import collect, make, spec_for


class CountingSky(FakeSky):
    """The fake, recording the job ids of each status read and the launches in flight; ``api_errors`` makes
    that many of the next status reads fail like a dropped connection to the API server."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.status_reads: list[list[int]] = []
        self.launching = self.max_launching = self.api_errors = 0
        self.tails: list[bool] = []
        self.lock = threading.Lock()

    def managed_jobs(self, *, name: str | None = None, job_ids: list[int] | None = None, refresh: bool = False):
        if job_ids is not None:
            with self.lock:
                self.status_reads.append(list(job_ids))
                if self.api_errors:
                    self.api_errors -= 1
                    raise ConnectionError("Could not connect to SkyPilot API server")
        return super().managed_jobs(name=name, job_ids=job_ids, refresh=refresh)

    def tail_managed_logs(self, job_id: int, follow: bool = True):
        with self.lock:
            self.tails.append(follow)
        return super().tail_managed_logs(job_id, follow)

    def launch_managed(self, task: Any, name: str) -> int:
        with self.lock:
            self.launching += 1
            self.max_launching = max(self.max_launching, self.launching)
        try:
            return super().launch_managed(task, name)
        finally:
            with self.lock:
                self.launching -= 1


@pytest.fixture
def sky_state(tmp_path: Path):
    state = tmp_path / "sky"
    yield state
    FakeSky(state).kill_all()


def counting(state: Path, **options: Any):
    return make(state, python=sys.executable, sdk="tests.test_skypilot_scale:CountingSky", **options)


def specs(tmp_path: Path, n: int) -> list[Any]:
    return [spec_for(tmp_path, key=f"s_trial_{i:04d}.train.1", env={"STEPS": "6"}) for i in range(1, n + 1)]


async def run_all(d: Any, jobs: list[Any]) -> list[list[Any]]:
    """Submit the jobs, then watch them all at once; each job's updates."""
    handles = [await d.submit(s) for s in jobs]
    results: list[list[Any]] = [[] for _ in jobs]

    async def watch(i: int) -> None:
        results[i] = await collect(d, jobs[i], handles[i], limit=60)

    async with anyio.create_task_group() as tg:
        for i in range(len(jobs)):
            tg.start_soon(watch, i)
    return results


def test_all_watchers_share_one_status_read_per_interval(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> tuple[Any, list[list[Any]]]:
        d = counting(sky_state, poll_interval=0.2)
        return d.sdk, await run_all(d, specs(tmp_path, 5))

    sky, results = anyio.run(main)
    for updates in results:
        assert isinstance(updates[-1], Exited) and updates[-1].exit_code == 0 and updates[-1].result["score"] == 0.5
        assert [round(u.step) for u in updates if isinstance(u, Progress)] == [1, 2, 3, 4, 5, 6]
    reads = sky.status_reads
    per_job = {job_id: sum(job_id in ids for ids in reads) for job_id in range(1, 6)}
    # One read per interval for everyone: as many reads as the longest-watched job took (the first round may
    # start before every watcher has asked), not one per job and interval.
    assert len(reads) <= max(per_job.values()) + 1 < sum(per_job.values())
    assert max(len(ids) for ids in reads) == 5


def test_launches_in_flight_are_bounded(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> tuple[Any, list[Any]]:
        d = counting(sky_state, max_launches_in_flight=2, sdk_options={"state_dir": str(sky_state), "launch_s": 0.5})
        jobs = specs(tmp_path, 5)
        handles: list[Any] = []

        async def submit(s: Any) -> None:
            handles.append(await d.submit(s))

        async with anyio.create_task_group() as tg:
            for s in jobs:
                tg.start_soon(submit, s)
        return d.sdk, handles

    sky, handles = anyio.run(main)
    assert sorted(h.data["job_id"] for h in handles) == [1, 2, 3, 4, 5]  # every job launched, once
    assert sky.max_launching == 2


def test_api_errors_are_retried_with_backoff_and_the_watch_goes_on(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> tuple[Any, list[Any]]:
        d = counting(sky_state, api_backoff=0.01, api_retries=4)
        spec = specs(tmp_path, 1)[0]
        handle = await d.submit(spec)
        d.sdk.api_errors = 3
        return d.sdk, await collect(d, spec, handle)

    sky, updates = anyio.run(main)
    assert isinstance(updates[-1], Exited) and updates[-1].exit_code == 0
    assert sky.api_errors == 0  # the three failures happened and were retried


def test_api_errors_beyond_the_retries_fail_the_watch(tmp_path: Path, sky_state: Path) -> None:
    seen: list[Any] = []

    async def main() -> None:
        d = counting(sky_state, api_backoff=0.01, api_retries=2)
        spec = specs(tmp_path, 1)[0]
        handle = await d.submit(spec)
        d.sdk.api_errors = 3
        seen.append(d.sdk)
        await collect(d, spec, handle)

    with pytest.raises(ConnectionError, match="API server"):
        anyio.run(main)
    assert seen[0].api_errors == 0 and len(seen[0].status_reads) == 3  # the first read and two retries


def test_a_refused_launch_is_retried_then_named_with_the_reason_and_the_fix(tmp_path: Path, sky_state: Path) -> None:
    async def main() -> None:
        d = counting(
            sky_state, api_backoff=0.01, api_retries=2, sdk_options={"state_dir": str(sky_state), "fail_launch": True}
        )
        await d.submit(specs(tmp_path, 1)[0])

    with pytest.raises(DispatcherError) as err:
        anyio.run(main)
    message = str(err.value)
    assert "refused to launch managed job 's_trial_0001.train.1'" in message and "the launch failed" in message
    assert "max_launches_in_flight" in message
    assert len(FakeSky(sky_state).launch_requests()) == 3  # the launch and two retries


def test_jobs_beyond_max_log_streams_are_watched_by_status_and_their_logs_read_once(
    tmp_path: Path, sky_state: Path
) -> None:
    async def main() -> tuple[Any, list[list[Any]]]:
        d = counting(sky_state, max_log_streams=1)
        return d.sdk, await run_all(d, specs(tmp_path, 3))

    sky, results = anyio.run(main)
    for updates in results:  # every job's result is read, streamed or not
        assert isinstance(updates[-1], Exited) and updates[-1].exit_code == 0 and updates[-1].result["score"] == 0.5
        assert [round(u.step) for u in updates if isinstance(u, Progress)] == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]  # at the end, if not live
    assert sorted(sky.tails) == [False, False, True]  # one stream followed; two logs read once at the end
