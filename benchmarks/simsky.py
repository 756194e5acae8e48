"""A simulated SkyPilot at scale, behind the SDK seam of ``dispatchers.skypilot.SkySDK``: for ``make bench-scale``.

Unlike ``tests/fakes/sky.py`` (which really runs each job's command) nothing runs here: each managed job is a
timeline in memory, and time is compressed (``speedup`` simulated seconds per real second), so a sweep of
thousands of hour-long jobs fits in minutes. It behaves like a managed-jobs controller of a given size:

- a launch request takes ``launch_s`` (the API server and controller accepting it) before its job exists;
- at most ``launching_limit`` jobs are STARTING (provisioning) at once and ``running_limit`` are RUNNING; the
  others wait PENDING, in order (SkyPilot's controller queues the same way);
- ``preempt_rate`` of the jobs lose their spot VM once while running: RECOVERING for ``recover_s``, then
  STARTING again, losing the work since the last checkpoint (``checkpoint_s``), like SkyPilot's recovery;
- each SDK call fails with probability ``api_error_rate`` (a dropped connection to the API server);
- logs: progress lines while a job runs; an eval job's last line is its ``SWEEP_RESULT``.

State changes are driven by a heap of timed events advanced by one ticker thread; every call reads under one lock.
Counts (calls per method, launches per job name, job ends and launch times) go to ``stats_path`` as JSON.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import json
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from sky.jobs import ManagedJobStatus as S
from sky.schemas.api.responses import ManagedJobRecord

from orchestrator.core.contract import RESULT_TAG, format_progress


class SimulatedApiError(ConnectionError):
    pass


class SimSky:
    def __init__(
        self,
        stats_path: str,
        speedup: float = 300.0,
        launch_s: float = 20.0,
        start_s: float = 90.0,
        recover_s: float = 180.0,
        checkpoint_s: float = 300.0,
        train_s: float = 1800.0,
        eval_s: float = 120.0,
        launching_limit: int = 64,
        running_limit: int = 2000,
        preempt_rate: float = 0.05,
        api_error_rate: float = 0.002,
        seed: int = 0,
    ) -> None:
        self.speedup = speedup
        self.launch_s, self.start_s, self.recover_s, self.checkpoint_s = launch_s, start_s, recover_s, checkpoint_s
        self.train_s, self.eval_s = train_s, eval_s
        self.launching_limit, self.running_limit = launching_limit, running_limit
        self.preempt_rate, self.api_error_rate = preempt_rate, api_error_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.jobs: dict[int, dict[str, Any]] = {}
        self.by_name: dict[str, list[int]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.in_flight: set[str] = set()
        self.pending: deque[int] = deque()
        self.starting = self.running = 0
        self.heap: list[tuple[float, int, str, int]] = []
        self.seq = itertools.count()
        self.ids = itertools.count(1)
        self.calls: Counter[str] = Counter()
        self.launches: Counter[str] = Counter()
        self.api_errors = self.preemptions = 0
        self.ends: list[float] = []  # simulated times of job ends
        self.launch_times: list[float] = []  # simulated times launch requests arrived
        self.busy_s = 0.0  # simulated job-seconds of RUNNING (the cluster time)
        self.stats_path = stats_path
        threading.Thread(target=self._tick, daemon=True).start()
        atexit.register(self._dump)

    # ---------------------------------------------------------------- time and the controller

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.speedup

    def _at(self, when: float, what: str, job_id: int) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), what, job_id))

    def _tick(self) -> None:
        last_dump = 0.0
        while True:
            time.sleep(0.01)
            with self.lock:
                self._advance(self.now())
            if time.monotonic() - last_dump > 1.0:
                last_dump = time.monotonic()
                self._dump()

    def _advance(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now:
            when, _, what, job_id = heapq.heappop(self.heap)
            getattr(self, "_on_" + what)(when, job_id)
        self._admit(now)

    def _admit(self, now: float) -> None:
        while (
            self.pending and self.starting < self.launching_limit and self.starting + self.running < self.running_limit
        ):
            job = self.jobs[self.pending.popleft()]
            job["status"] = S.STARTING
            self.starting += 1
            self._at(now + self.start_s * self.rng.uniform(0.5, 1.5), "started", job["id"])

    def _on_request_done(self, now: float, request_index: int) -> None:
        req = self.requests[f"r{request_index}"]
        job_id = next(self.ids)
        name = req["job_name"]
        kind_s = self.eval_s if ".eval." in name else self.train_s
        self.jobs[job_id] = {
            "id": job_id,
            "name": name,
            "status": S.PENDING,
            "submitted_at": now,
            "start_at": None,
            "end_at": None,
            "work_left": kind_s * self.rng.uniform(0.7, 1.3),
            "work_total": 0.0,
            "recovery_count": 0,
            "preempt": self.rng.random() < self.preempt_rate,
            "run_since": None,
        }
        self.jobs[job_id]["work_total"] = self.jobs[job_id]["work_left"]
        self.by_name.setdefault(name, []).append(job_id)
        self.pending.append(job_id)
        req.update(status="SUCCEEDED", job_id=job_id)
        self.in_flight.discard(f"r{request_index}")

    def _on_started(self, now: float, job_id: int) -> None:
        job = self.jobs[job_id]
        if job["status"] != S.STARTING:
            return
        self.starting -= 1
        self.running += 1
        job.update(status=S.RUNNING, run_since=now)
        job["start_at"] = job["start_at"] or now
        if job["preempt"]:
            job["preempt"] = False
            self._at(now + job["work_left"] * self.rng.uniform(0.1, 0.9), "preempted", job_id)
        else:
            self._at(now + job["work_left"], "finished", job_id)

    def _on_preempted(self, now: float, job_id: int) -> None:
        job = self.jobs[job_id]
        if job["status"] != S.RUNNING:
            return
        self.running -= 1
        self.preemptions += 1
        ran = now - job["run_since"]
        self.busy_s += ran
        job["work_left"] -= ran - min(ran, self.checkpoint_s * self.rng.random())  # work since the checkpoint is lost
        job.update(status=S.RECOVERING, recovery_count=job["recovery_count"] + 1)
        self._at(now + self.recover_s, "recovered", job_id)

    def _on_recovered(self, now: float, job_id: int) -> None:
        job = self.jobs[job_id]
        if job["status"] == S.RECOVERING:
            job["status"] = S.PENDING
            self.pending.appendleft(job_id)

    def _on_finished(self, now: float, job_id: int) -> None:
        job = self.jobs[job_id]
        if job["status"] != S.RUNNING:
            return
        self.running -= 1
        self.busy_s += now - job["run_since"]
        job.update(status=S.SUCCEEDED, end_at=now)
        self.ends.append(now)

    # ---------------------------------------------------------------- the seam

    def _call(self, method: str) -> None:
        with self.lock:
            self.calls[method] += 1
            fail = self.rng.random() < self.api_error_rate
            if fail:
                self.api_errors += 1
        if fail:
            raise SimulatedApiError(f"simulated: cannot reach the SkyPilot API server ({method})")

    def enabled_clouds(self) -> list[str]:
        self._call("enabled_clouds")
        return ["aws"]

    def local_api_server_running(self) -> bool | None:
        return True

    def stop_local_api_server(self) -> None:
        pass

    def launch_managed(self, task: Any, name: str) -> int:
        self._call("launch_managed")
        with self.lock:
            index = len(self.requests)
            self.requests[f"r{index}"] = {"job_name": name, "status": "RUNNING", "job_id": None}
            self.in_flight.add(f"r{index}")
            self.launches[name] += 1
            now = self.now()
            self.launch_times.append(now)
            self._at(now + self.launch_s * self.rng.uniform(0.5, 1.5), "request_done", index)
        while True:  # sky.get: wait for the request's result
            time.sleep(0.01)
            with self.lock:
                req = self.requests[f"r{index}"]
                if req["status"] == "SUCCEEDED":
                    return int(req["job_id"])

    def managed_jobs(
        self, *, name: str | None = None, job_ids: list[int] | None = None, refresh: bool = False
    ) -> list[ManagedJobRecord]:
        self._call("managed_jobs (status read)" if job_ids is not None else "managed_jobs (find by name)")
        with self.lock:
            if job_ids is not None:
                ids = [i for i in job_ids if i in self.jobs]
            elif name is not None:
                ids = list(self.by_name.get(name, []))
            else:
                ids = list(self.jobs)
            jobs = [dict(self.jobs[i]) for i in ids]
            now = self.now()
        return [
            ManagedJobRecord(
                job_id=job["id"],
                task_id=0,
                job_name=job["name"],
                task_name=job["name"],
                status=job["status"],
                submitted_at=job["submitted_at"],
                start_at=job["start_at"],
                end_at=job["end_at"],
                job_duration=((job["end_at"] or now) - job["start_at"]) if job["start_at"] else None,
                recovery_count=job["recovery_count"],
                failure_reason=None,
                resources="1x [A10G:1]",
            )
            for job in jobs
        ]

    def tail_managed_logs(self, job_id: int, follow: bool = True) -> Iterator[str | None]:
        self._call("tail_managed_logs")
        with self.lock:
            if job_id not in self.jobs:
                raise ValueError(f"Job {job_id} not found.")
        return self._logs(job_id, follow)

    def _logs(self, job_id: int, follow: bool) -> Iterator[str | None]:
        epoch = 0
        while True:
            with self.lock:
                job = dict(self.jobs[job_id])
                now = self.now()
            done = job["status"].is_terminal()
            if job["status"] == S.RUNNING or done:
                epoch += 1
                ran = (job["end_at"] or now) - job["run_since"]
                step = min(1.0, 1 - (job["work_left"] - ran) / job["work_total"]) * 1e5
                yield format_progress(epoch, 5000.0, step, 1e5) + "\n"
            if done or not follow:
                if done and ".eval." in job["name"]:
                    yield RESULT_TAG + json.dumps({"score": random.random()}) + "\n"
                return
            time.sleep(60.0 / self.speedup)  # a progress line per simulated minute

    def cancel_managed(self, job_id: int) -> None:
        self._call("cancel_managed")
        with self.lock:
            job = self.jobs[job_id]
            if not job["status"].is_terminal():
                if job["status"] == S.RUNNING:
                    self.running -= 1
                elif job["status"] == S.STARTING:
                    self.starting -= 1
                job.update(status=S.CANCELLED, end_at=self.now())

    def requests_in_flight(self) -> list[Any]:
        self._call("requests_in_flight")
        with self.lock:
            return [
                SimpleNamespace(
                    request_id=rid,
                    name="sky.jobs.launch",
                    status="RUNNING",
                    request_body=json.dumps({"name": self.requests[rid]["job_name"]}),
                )
                for rid in self.in_flight
            ]

    def wait_request(self, request_id: str) -> None:
        self._call("wait_request")
        while True:
            with self.lock:
                if self.requests[request_id]["status"] != "RUNNING":
                    return
            time.sleep(0.01)

    # ---------------------------------------------------------------- stats

    def _dump(self) -> None:
        with self.lock:
            stats = {
                "sim_seconds": self.now(),
                "calls": dict(self.calls),
                "launches": len(self.launches),
                "launched_twice": sorted(n for n, c in self.launches.items() if c > 1),
                "jobs": len(self.jobs),
                "ends": list(self.ends),
                "launch_times": list(self.launch_times),
                "busy_s": self.busy_s
                + sum(self.now() - j["run_since"] for j in self.jobs.values() if j["status"] == S.RUNNING),
                "api_errors": self.api_errors,
                "preemptions": self.preemptions,
                "max_pending": len(self.pending),
            }
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, self.stats_path)


_SHARED: dict[str, SimSky] = {}


def shared(**options: Any) -> SimSky:
    """One simulated SkyPilot per process (the service may build its dispatcher more than once): the factory
    named by ``sdk = "benchmarks.simsky:shared"``."""
    key = options["stats_path"]
    if key not in _SHARED:
        _SHARED[key] = SimSky(**options)
    return _SHARED[key]
