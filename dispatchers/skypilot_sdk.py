"""The seam to SkyPilot: the only code that calls its SDK (see ``dispatchers.skypilot``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from dispatchers.base import DispatcherError

# --------------------------------------------------------------------------------------------------------------
# The seam: the only code that calls SkyPilot. Blocking calls; the dispatcher runs each in a worker thread.


class SkySDK:
    """SkyPilot 0.14's client SDK, narrowed to the calls this dispatcher makes. Each call sends a request to the
    API server (started on 127.0.0.1 by SkyPilot itself when none is configured) and waits for its result with
    ``sky.get``. Records are SkyPilot's own: ``responses.ManagedJobRecord`` (``status`` a
    ``sky.jobs.ManagedJobStatus``), ``responses.ClusterJobRecord`` (``status`` a ``sky.JobStatus``) and
    ``payloads.RequestPayload`` (the API server's requests)."""

    _FIELDS = (
        "job_id",
        "task_id",
        "job_name",
        "task_name",
        "resources",
        "submitted_at",
        "start_at",
        "end_at",
        "job_duration",
        "recovery_count",
        "status",
        "failure_reason",
        "details",
    )

    def __init__(self) -> None:
        import sky  # 3 s to import: only when SkyPilot is really used

        self.sky = sky

    # Managed jobs (sky.jobs)
    def launch_managed(self, task: Any, name: str) -> int:
        job_ids, _controller = self.sky.get(self.sky.jobs.launch(task, name=name))
        if not job_ids:
            raise RuntimeError(f"SkyPilot returned no job id for managed job {name!r}")
        return int(job_ids[0])

    def managed_jobs(
        self, *, name: str | None = None, job_ids: list[int] | None = None, refresh: bool = False
    ) -> list[Any]:
        records, _total, _counts, _unfiltered = self.sky.get(
            self.sky.jobs.queue_v2(refresh=refresh, job_ids=job_ids, name_match=name, fields=list(self._FIELDS))
        )
        return list(records)

    def tail_managed_logs(self, job_id: int, follow: bool = True) -> Iterator[str | None]:
        return self.sky.jobs.tail_logs(job_id=job_id, follow=follow, preload_content=False)

    def cancel_managed(self, job_id: int) -> None:
        self.sky.get(self.sky.jobs.cancel(job_ids=[job_id]))

    # Checkpoints in a bucket (the hybrid hand-over)
    def sync_down(self, source: str, destination: str) -> None:
        """Copy a bucket directory to a local one with the cloud's own CLI (``aws s3 sync``, ``gsutil rsync``...),
        the command SkyPilot itself uses for COPY-mode mounts. Syncing again copies only what changed."""
        import subprocess

        from sky import cloud_stores

        command = cloud_stores.get_storage_from_path(source).make_sync_dir_command(source, destination)
        # SkyPilot builds the command from the bucket URI and the path (no user input besides the configured bucket)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"syncing {source} to {destination} failed (exit {done.returncode}): {tail}")

    # Jobs on a cluster (sky.launch)
    def launch_cluster(
        self, task: Any, cluster_name: str, *, idle_minutes_to_autostop: int | None = None, dryrun: bool = False
    ) -> int | None:
        request = self.sky.launch(
            task, cluster_name=cluster_name, idle_minutes_to_autostop=idle_minutes_to_autostop, dryrun=dryrun
        )
        # A dry run streams the optimizer's plan (which cloud, instance and price it would pick) to stdout.
        job_id, _handle = self.sky.stream_and_get(request) if dryrun else self.sky.get(request)
        return job_id

    def cluster_jobs(self, cluster_name: str) -> list[Any]:
        from sky import exceptions

        try:
            return list(self.sky.get(self.sky.queue(cluster_name)))  # type: ignore[arg-type]  # SDK stub: a list is iterable
        except exceptions.ClusterDoesNotExist:
            return []

    def tail_cluster_logs(self, cluster_name: str, job_id: int, follow: bool = True) -> Iterator[str | None]:
        return self.sky.tail_logs(cluster_name, job_id, follow, preload_content=False)

    def cancel_cluster(self, cluster_name: str, job_id: int) -> None:
        self.sky.get(self.sky.cancel(cluster_name, job_ids=[job_id]))

    # Requests the API server is still processing (``sky api status``)
    def requests_in_flight(self) -> list[Any]:
        """The API server's unfinished requests (PENDING, WAITING, RUNNING) as SkyPilot's own
        ``payloads.RequestPayload``s; for your own requests ``request_body`` is the request's body as JSON
        (a ``jobs.launch`` body carries the job's ``name``, a ``launch`` body the task YAML and ``cluster_name``).
        Empty when the local API server is not running (it then has no request in flight)."""
        return list(self.sky.api_status(all_status=False, fields=list(self._REQUEST_FIELDS)))

    def wait_request(self, request_id: str) -> None:
        """Wait until a request has finished, however it ends: the caller reads the outcome elsewhere (a launch's
        job is then in the queue, or it is not). A wait that breaks while the request still runs raises."""
        try:
            self.sky.get(request_id)  # type: ignore[arg-type]  # the SDK takes the id string it returned
        except Exception:
            records = self.sky.api_status(request_ids=[request_id])
            if any(r.status in _ACTIVE_REQUEST for r in records):
                raise  # the wait broke, not the request: do not let a running launch pass for a finished one

    _REQUEST_FIELDS = ("request_id", "name", "request_body", "status", "cluster_name", "created_at")

    # The setup (preflight and dry run)
    def enabled_clouds(self) -> list[str]:
        """The clouds SkyPilot may launch on (``sky check`` enables them from the credentials it finds)."""
        from sky.client import sdk  # not re-exported as sky.enabled_clouds

        clouds = self.sky.get(sdk.enabled_clouds())  # the cache `sky check` fills
        if not clouds:  # never checked here: check now, as sky.launch does on an empty cache
            self.sky.get(sdk.check(infra_list=None, verbose=False))
            clouds = self.sky.get(sdk.enabled_clouds())
        return [str(cloud) for cloud in clouds]

    def local_api_server_running(self) -> bool | None:
        """Whether SkyPilot's local API server answers (asking does not start it); None when a remote API server
        is configured (not ours to start or stop)."""
        from sky.server import common

        if not common.is_api_server_local():
            return None
        return common.get_api_server_status().status == common.ApiServerStatus.HEALTHY

    def stop_local_api_server(self) -> None:
        self.sky.api_stop()  # ``sky api stop``


_ACTIVE_REQUEST = ("PENDING", "WAITING", "RUNNING")  # sky.server.requests.requests.RequestStatus.active_statuses()


def launch_request_job_name(record: Any) -> tuple[str, str | None] | None:
    """``(job name, cluster name or None)`` of an unfinished launch request (``sky.jobs.launch``: a managed job;
    ``sky.launch``: a job on a cluster), from SkyPilot's ``RequestPayload``; None for any other request, or one whose
    body is not visible to us (another user's)."""
    import json

    kind = record.name.removeprefix("sky.")  # the server records "sky.jobs.launch", "sky.launch"
    if kind not in ("jobs.launch", "launch") or record.status not in _ACTIVE_REQUEST:
        return None
    try:
        body = json.loads(record.request_body or "null")
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if kind == "jobs.launch" and body.get("name"):
        return str(body["name"]), None  # sky.jobs.launch(task, name=...) names the managed job
    try:  # the dag YAML: its first document names the dag, which is the (single) task's name
        import yaml

        first = next(iter(yaml.safe_load_all(body.get("task") or "")), None)
    except Exception:  # noqa: BLE001 - an unreadable body is not our launch
        return None
    name = first.get("name") if isinstance(first, dict) else None
    if not name:
        return None
    return str(name), (body.get("cluster_name") if kind == "launch" else None)


def load_sdk(path: str | None, options: dict[str, Any]) -> Any:
    if path is None:
        return SkySDK(**options)
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr or "SkySDK")
    except (ImportError, AttributeError) as exc:
        raise DispatcherError(f"dispatcher_options.skypilot.sdk = {path!r} cannot be imported: {exc}") from None
    return factory(**options)
