"""A fake SkyPilot behind the same seam as ``dispatchers.skypilot.SkySDK``, for tests without a cloud.

It behaves like SkyPilot 0.14 as the dispatcher sees it, and returns SkyPilot's own types:

- ``launch_managed(task, name)`` takes a real ``sky.Task`` (it is serialized to YAML, as the real client does
  before sending it to the API server) and returns a job id; ids increase from 1. Like the real one it is a
  request to an API server, recorded in the fake's request table, which the "server" finishes ``launch_s``
  seconds later (or, with ``hold_launches``, once the test calls ``release_launches()``) whether or not the
  caller still waits: only then does the job exist (get an id, appear in the queue). A caller killed meanwhile
  leaves the request in flight, and it completes without it.
- ``requests_in_flight()`` returns the unfinished requests as ``sky.server.requests.payloads.RequestPayload``s
  with the body as JSON, as ``sky.api_status()`` does (a real ``JobsLaunchBody`` / ``LaunchBody``);
  ``wait_request(request_id)`` waits until one has finished, like ``sky.get`` (a failed launch is not an error).
- ``managed_jobs(...)`` returns ``sky.schemas.api.responses.ManagedJobRecord``s whose ``status`` is a
  ``sky.jobs.ManagedJobStatus`` that moves PENDING -> STARTING -> RUNNING -> SUCCEEDED / FAILED, RECOVERING
  after ``preempt(job_id)`` (then STARTING -> RUNNING again, ``recovery_count`` + 1), CANCELLING -> CANCELLED
  after ``cancel_managed``. ``name`` is a substring match, like the real ``name_match``.
- ``tail_managed_logs(job_id, follow=True)`` yields the job's output lines (with their newlines) and ends when
  the job is terminal, following it across a recovery, like the real log stream.
- a task's MOUNT-mode ``sky.Storage`` mounts (``task.storage_mounts``) become symlinks from the mount path (with
  ``~/sky_workdir`` and ``~`` read as the job's working directory) to ``bucket_root/<bucket>/<path>``: a local
  directory stands in for each bucket; ``sync_down(uri, dir)`` copies a bucket directory to a local one.
- the ``*_cluster`` calls do the same for jobs on a cluster with ``ClusterJobRecord`` / ``sky.JobStatus``.

"Running" a job really runs the task's ``run`` command with bash, with its envs and secrets, in the task's
workdir (or a scratch directory), in its own session: so a job outlives the process that launched it, and all
state lives in files under ``state_dir`` (like ~/.sky), so a restarted service in another process sees the same
jobs. Time is real: ``pending_s``, ``starting_s`` and ``recover_s`` say how long each phase lasts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sky import JobStatus
from sky.jobs import ManagedJobStatus
from sky.schemas.api.responses import ClusterJobRecord, ManagedJobRecord

_CLUSTER_STATUS = {
    "PENDING": JobStatus.PENDING,
    "STARTING": JobStatus.SETTING_UP,
    "RUNNING": JobStatus.RUNNING,
    "RECOVERING": JobStatus.SETTING_UP,
    "SUCCEEDED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "CANCELLING": JobStatus.RUNNING,
    "CANCELLED": JobStatus.CANCELLED,
}
_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "FAILED_SETUP", "FAILED_NO_RESOURCE"}
_ACTIVE_REQUEST = ("PENDING", "WAITING", "RUNNING")


class FakeSky:
    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        pending_s: float = 0.2,
        starting_s: float = 0.2,
        recover_s: float = 0.3,
        poll_s: float = 0.05,
        launch_s: float = 0.0,
        fail_launch: bool = False,
        hold_launches: bool = False,
        clouds: list[str] | None = None,
        bucket_root: str | None = None,
    ) -> None:
        state_dir = state_dir or os.environ.get("FAKE_SKY_STATE")
        if not state_dir:
            raise ValueError("FakeSky needs state_dir (or FAKE_SKY_STATE in the environment)")
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pending_s, self.starting_s, self.recover_s, self.poll_s = pending_s, starting_s, recover_s, poll_s
        self.launch_s = launch_s  # how long the API server takes to process a launch request
        self.fail_launch = fail_launch  # the launch request fails on the server (no job)
        self.hold_launches = hold_launches  # launch requests stay in flight until release_launches()
        self.calls: list[str] = []  # which seam methods were called, for tests
        self.clouds = ["aws"] if clouds is None else clouds  # what `sky check` enabled
        self.bucket_root = Path(bucket_root) if bucket_root else self.root / "buckets"  # stands in for the cloud

    # ---------------------------------------------------------------- setup
    # The "API server" is a file under state_dir: any request starts it, as the real client does.

    def enabled_clouds(self) -> list[str]:
        self.calls.append("enabled_clouds")
        self._server_up()
        return list(self.clouds)

    def local_api_server_running(self) -> bool | None:
        return (self.root / "api_server").exists()

    def stop_local_api_server(self) -> None:
        (self.root / "api_server").unlink(missing_ok=True)

    def _server_up(self) -> None:
        (self.root / "api_server").touch()

    # ---------------------------------------------------------------- managed jobs

    def launch_managed(self, task: Any, name: str) -> int:
        self.calls.append("launch_managed")
        return self._launch("jobs.launch", "managed", name, task)

    def managed_jobs(
        self, *, name: str | None = None, job_ids: list[int] | None = None, refresh: bool = False
    ) -> list[ManagedJobRecord]:
        self.calls.append("managed_jobs")
        self._process_requests()
        out = []
        for job in self._all("managed"):
            if name is not None and name not in job["name"]:
                continue
            if job_ids is not None and job["id"] not in job_ids:
                continue
            job = self._refresh("managed", job["id"])
            out.append(
                ManagedJobRecord(
                    job_id=job["id"],
                    task_id=0,
                    job_name=job["name"],
                    task_name=job["name"],
                    status=ManagedJobStatus(job["status"]),
                    submitted_at=job["submitted_at"],
                    start_at=job.get("start_at"),
                    end_at=job.get("end_at"),
                    job_duration=self._duration(job),
                    recovery_count=job["recovery_count"],
                    failure_reason=job.get("failure_reason"),
                    resources=job["resources"],
                )
            )
        return sorted(out, key=lambda r: -r.job_id)  # newest first, like the real queue

    def tail_managed_logs(self, job_id: int, follow: bool = True) -> Iterator[str | None]:
        self.calls.append("tail_managed_logs")
        self._load("managed", job_id)  # raises like the real one for an unknown job
        return self._tail("managed", job_id, follow)

    def cancel_managed(self, job_id: int) -> None:
        self.calls.append("cancel_managed")
        self._cancel("managed", job_id)

    # ---------------------------------------------------------------- jobs on a cluster

    def launch_cluster(
        self, task: Any, cluster_name: str, *, idle_minutes_to_autostop: int | None = None, dryrun: bool = False
    ) -> int | None:
        self.calls.append("launch_cluster")
        self._server_up()
        if dryrun:
            return None
        return self._launch("launch", f"cluster-{cluster_name}", task.name, task, cluster_name=cluster_name)

    def cluster_jobs(self, cluster_name: str) -> list[ClusterJobRecord]:
        self.calls.append("cluster_jobs")
        self._process_requests()
        ns = f"cluster-{cluster_name}"
        out = []
        for job in self._all(ns):
            job = self._refresh(ns, job["id"])
            out.append(
                ClusterJobRecord(
                    job_id=job["id"],
                    job_name=job["name"],
                    username="fake",
                    user_hash="fake",
                    submitted_at=job["submitted_at"],
                    start_at=job.get("start_at"),
                    end_at=job.get("end_at"),
                    resources=job["resources"],
                    status=_CLUSTER_STATUS[job["status"]],
                    log_path=str(self._dir(ns, job["id"])),
                )
            )
        return out

    def tail_cluster_logs(self, cluster_name: str, job_id: int, follow: bool = True) -> Iterator[str | None]:
        self.calls.append("tail_cluster_logs")
        return self._tail(f"cluster-{cluster_name}", job_id, follow)

    def cancel_cluster(self, cluster_name: str, job_id: int) -> None:
        self.calls.append("cancel_cluster")
        self._cancel(f"cluster-{cluster_name}", job_id)

    # ---------------------------------------------------------------- buckets

    def bucket_path(self, uri: str) -> Path:
        """The local directory standing in for ``<scheme>://<bucket>/<path>``."""
        _scheme, _, rest = uri.partition("://")
        return self.bucket_root / rest

    def sync_down(self, source: str, destination: str) -> None:
        """Like ``aws s3 sync``: copy what is missing or changed, file by file (each file appears whole)."""
        self.calls.append("sync_down")
        src = self.bucket_path(source)
        if not src.is_dir():
            raise RuntimeError(f"fake-sky: {source} does not exist")
        for path in sorted(src.rglob("*")):
            target = Path(destination) / path.relative_to(src)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif not target.exists() or target.stat().st_size != path.stat().st_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target.with_name(target.name + ".sync"))
                os.replace(target.with_name(target.name + ".sync"), target)

    # ---------------------------------------------------------------- the API server's requests

    def requests_in_flight(self) -> list[Any]:
        from sky.server.requests.payloads import RequestPayload

        self.calls.append("requests_in_flight")
        self._process_requests()
        out = []
        for req in self._requests():
            if req["status"] in _ACTIVE_REQUEST:
                # What the server's listing sends (requests.encode_requests): the body as JSON, no return value.
                out.append(
                    RequestPayload(
                        request_id=req["request_id"],
                        name=req["name"],
                        entrypoint="",
                        request_body=req["body"],
                        status=req["status"],
                        created_at=req["created_at"],
                        user_id="fake",
                        return_value="null",
                        error="null",
                        pid=None,
                        schedule_type="long",
                        cluster_name=req["cluster_name"],
                    )
                )
        return sorted(out, key=lambda r: -r.created_at)

    def wait_request(self, request_id: str) -> None:
        self.calls.append("wait_request")
        self._wait(request_id)

    # ---------------------------------------------------------------- test controls (not part of the seam)

    def preempt(self, job_id: int, namespace: str = "managed") -> None:
        """The spot VM goes away: the job's processes die and SkyPilot starts recovering it."""
        with self._locked():
            job = self._load(namespace, job_id)
            if job["status"] != "RUNNING":
                raise RuntimeError(f"job {job_id} is {job['status']}, not RUNNING")
            self._kill(job)
            job.update(status="RECOVERING", since=time.time(), recovery_count=job["recovery_count"] + 1)
            self._save(namespace, job)

    def release_launches(self) -> None:
        """Let the API server finish the launch requests held back by ``hold_launches``."""
        (self.root / "released").touch()

    def launch_requests(self) -> list[dict[str, Any]]:
        """Every launch request the API server received, oldest first."""
        return sorted(self._requests(), key=lambda r: r["created_at"])

    def job(self, job_id: int, namespace: str = "managed") -> dict[str, Any]:
        return self._refresh(namespace, job_id)

    def task_yaml(self, job_id: int, namespace: str = "managed") -> str:
        return (self._dir(namespace, job_id) / "task.yaml").read_text()

    def kill_all(self) -> None:
        """Test cleanup: stop every job still running."""
        for ns_dir in self.root.glob("*"):
            for job_dir in ns_dir.glob("*"):
                if (job_dir / "job.json").exists():
                    self._kill(json.loads((job_dir / "job.json").read_text()))

    # ---------------------------------------------------------------- internals

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _dir(self, ns: str, job_id: int) -> Path:
        return self.root / ns / str(job_id)

    def _load(self, ns: str, job_id: int) -> dict[str, Any]:
        path = self._dir(ns, job_id) / "job.json"
        if not path.exists():
            raise ValueError(f"Job {job_id} not found.")  # what SkyPilot says for an unknown job
        return json.loads(path.read_text())

    def _save(self, ns: str, job: dict[str, Any]) -> None:
        path = self._dir(ns, job["id"]) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job))
        os.replace(tmp, path)

    def _all(self, ns: str) -> list[dict[str, Any]]:
        base = self.root / ns
        if not base.exists():
            return []
        jobs = []
        for d in base.iterdir():
            if (d / "job.json").exists():
                jobs.append(json.loads((d / "job.json").read_text()))
        return jobs

    def _launch(self, request_name: str, ns: str, name: str, task: Any, cluster_name: str | None = None) -> int:
        """The client side of a launch: send the request, then wait for its result (``sky.get``)."""
        request_id = self._request(request_name, ns, name, task, cluster_name)
        req = self._wait(request_id)
        if req["status"] != "SUCCEEDED":
            raise RuntimeError(req["error"])
        return int(req["job_id"])

    def _request(self, request_name: str, ns: str, name: str, task: Any, cluster_name: str | None) -> str:
        """The API server accepts a launch request: the task as the client serialized it; no job yet."""
        self._server_up()
        import uuid

        from sky.server.requests import payloads
        from sky.utils import dag_utils, yaml_utils

        config = task.to_yaml_config()  # what the real client sends to the API server
        redacted = task.to_yaml_config(use_user_specified_yaml=True)  # secrets redacted, for the file
        if not config.get("run"):
            raise ValueError("The task has no run command.")
        dag = dag_utils.convert_entrypoint_to_dag(task)
        if request_name == "jobs.launch":
            dag.name = name
            body = payloads.JobsLaunchBody(task=dag_utils.dump_dag_to_yaml_str(dag), name=name)
        else:
            body = payloads.LaunchBody(task=dag_utils.dump_dag_to_yaml_str(dag), cluster_name=cluster_name)
        resources = next(iter(task.resources))
        now = time.time()
        req = {  # "name": the server records request names with its "sky." prefix
            "request_id": uuid.uuid4().hex,
            "name": "sky." + request_name,
            "status": "RUNNING",
            "created_at": now,
            "done_at": now + self.launch_s,
            "fail": self.fail_launch,
            "held": self.hold_launches,
            "cluster_name": cluster_name,
            "body": body.model_dump_json(),
            "ns": ns,
            "error": None,
            "job_id": None,
            "task_yaml": yaml_utils.dump_yaml_str(redacted),
            "job": {
                "name": name,
                "status": "PENDING",
                "recovery_count": 0,
                "attempt": 0,
                "resources": f"{task.num_nodes}x {resources}",
                "run": config["run"],
                "envs": {
                    **config.get("envs", {}),
                    **{k: getattr(v, "get_secret_value", lambda v=v: v)() for k, v in (task.secrets or {}).items()},
                },
                "workdir": config.get("workdir") if isinstance(config.get("workdir"), str) else None,
                "mounts": {
                    path: storage.source
                    for path, storage in (task.storage_mounts or {}).items()
                    if storage.mode.value == "MOUNT" and isinstance(storage.source, str)
                },
            },
        }
        with self._locked():
            (self.root / "requests").mkdir(exist_ok=True)
            self._save_request(req)
        return req["request_id"]

    def _wait(self, request_id: str) -> dict[str, Any]:
        path = self.root / "requests" / f"{request_id}.json"
        with self._locked():  # who waits for it (tests look): the process that sent it, or a successor
            if path.exists():
                req = json.loads(path.read_text())
                self._save_request({**req, "waiters": [*req.get("waiters", []), os.getpid()]})
        while True:
            self._process_requests()
            path = self.root / "requests" / f"{request_id}.json"
            if not path.exists():
                raise ValueError(f"Request {request_id} not found.")
            req = json.loads(path.read_text())
            if req["status"] not in _ACTIVE_REQUEST:
                return req
            time.sleep(self.poll_s)

    def _requests(self) -> list[dict[str, Any]]:
        base = self.root / "requests"
        return [json.loads(p.read_text()) for p in base.glob("*.json")] if base.exists() else []

    def _save_request(self, req: dict[str, Any]) -> None:
        path = self.root / "requests" / f"{req['request_id']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(req))
        os.replace(tmp, path)

    def _process_requests(self) -> None:
        """The API server finishes the launch requests that are due (whoever is still waiting for them)."""
        with self._locked():
            for req in sorted(self._requests(), key=lambda r: r["created_at"]):
                if req["status"] not in _ACTIVE_REQUEST or time.time() < req["done_at"]:
                    continue
                if req.get("held") and not (self.root / "released").exists():
                    continue
                if req["fail"]:
                    req.update(status="FAILED", error="fake-sky: the launch failed on the API server")
                else:
                    req.update(status="SUCCEEDED", job_id=self._insert(req["ns"], req["job"], req["task_yaml"]))
                self._save_request(req)

    def _insert(self, ns: str, job: dict[str, Any], task_yaml: str) -> int:
        """The job enters the queue (called with the lock held): it gets its id now."""
        base = self.root / ns
        base.mkdir(parents=True, exist_ok=True)
        job_id = 1 + max((int(d.name) for d in base.iterdir() if d.name.isdigit()), default=0)
        d = self._dir(ns, job_id)
        d.mkdir()
        (d / "task.yaml").write_text(task_yaml)
        now = time.time()
        self._save(ns, {**job, "id": job_id, "since": now, "submitted_at": now})
        return job_id

    def _duration(self, job: dict[str, Any]) -> float | None:
        if not job.get("start_at"):
            return None
        return (job.get("end_at") or time.time()) - job["start_at"]

    def _refresh(self, ns: str, job_id: int) -> dict[str, Any]:
        """Advance the job's state machine to now (SkyPilot's controller does this in the background)."""
        with self._locked():
            job = self._load(ns, job_id)
            changed = True
            while changed and job["status"] not in _TERMINAL:
                changed = self._step(ns, job)
            self._save(ns, job)
            return job

    def _step(self, ns: str, job: dict[str, Any]) -> bool:
        now, status = time.time(), job["status"]
        if status == "CANCELLING":
            self._kill(job)
            job.update(status="CANCELLED", end_at=now)
            return True
        if status == "PENDING" and now - job["since"] >= self.pending_s:
            job.update(status="STARTING", since=job["since"] + self.pending_s)
            return True
        if status == "RECOVERING" and now - job["since"] >= self.recover_s:
            job.update(status="STARTING", since=job["since"] + self.recover_s)
            return True
        if status == "STARTING" and now - job["since"] >= self.starting_s:
            self._spawn(ns, job)
            job.update(status="RUNNING", since=now)
            job.setdefault("start_at", now)
            return True
        if status == "RUNNING":
            exit_file = self._dir(ns, job["id"]) / f"exit.{job['attempt']}"
            if exit_file.exists():
                code = int(exit_file.read_text().strip() or 1)
                job.update(status="SUCCEEDED" if code == 0 else "FAILED", end_at=now, exit_code=code)
                if code:
                    job["failure_reason"] = f"Job exited with code {code}"
                return True
        return False

    def _spawn(self, ns: str, job: dict[str, Any]) -> None:
        d = self._dir(ns, job["id"])
        job["attempt"] += 1
        attempt = job["attempt"]
        workdir = job.get("workdir") or str(d / "sky_workdir")
        os.makedirs(workdir, exist_ok=True)
        for mount_path, source in job.get("mounts", {}).items():  # the bucket, mounted where the task asked
            relative = mount_path.removeprefix("~/sky_workdir").removeprefix("~").lstrip("/")
            link, bucket = Path(workdir) / relative, self.bucket_path(source)
            bucket.mkdir(parents=True, exist_ok=True)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(bucket, target_is_directory=True)
        env = {
            **os.environ,
            **{k: str(v) for k, v in job["envs"].items()},
            "SKYPILOT_TASK_ID": f"fake-{job['id']}-{attempt}",
            "SKYPILOT_NUM_NODES": "1",
        }
        log = open(d / f"run.{attempt}.log", "ab")
        # bash runs the task's run script; the wrapper records its exit code atomically when it ends by itself.
        wrapper = 'bash -c "$1"; rc=$?; echo $rc > "$2.tmp"; mv "$2.tmp" "$2"'
        proc = subprocess.Popen(
            ["bash", "-c", wrapper, "fake-sky", job["run"], str(d / f"exit.{attempt}")],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        job["pgid"] = proc.pid

    def _kill(self, job: dict[str, Any]) -> None:
        pgid = job.get("pgid")
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _cancel(self, ns: str, job_id: int) -> None:
        with self._locked():
            job = self._load(ns, job_id)
            if job["status"] not in _TERMINAL:
                job["status"] = "CANCELLING"
                self._save(ns, job)
        self._refresh(ns, job_id)

    def _tail(self, ns: str, job_id: int, follow: bool) -> Iterator[str | None]:
        attempt, pos, buf = 0, 0, b""
        d = self._dir(ns, job_id)
        while True:
            job = self._refresh(ns, job_id)
            if job["attempt"] > attempt and job["attempt"] > 0:
                if attempt:  # drain what the previous attempt wrote, then follow the new one
                    yield from self._lines(d / f"run.{attempt}.log", pos, buf)
                    yield f"(fake-sky) Job {job_id} recovered (recovery {job['recovery_count']}); following its logs.\n"
                attempt, pos, buf = job["attempt"], 0, b""
            if attempt:
                path = d / f"run.{attempt}.log"
                if path.exists():
                    with open(path, "rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                    pos += len(chunk)
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for line in complete:
                        yield line.decode(errors="replace") + "\n"
            if job["status"] in _TERMINAL or not follow:
                if buf:
                    yield buf.decode(errors="replace") + "\n"
                return
            time.sleep(self.poll_s)

    def _lines(self, path: Path, pos: int, pending: bytes) -> Iterator[str]:
        data = pending
        if path.exists():
            with open(path, "rb") as f:
                f.seek(pos)
                data += f.read()
        for line in data.splitlines():
            yield line.decode(errors="replace") + "\n"
