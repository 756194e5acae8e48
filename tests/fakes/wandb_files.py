"""Read back what wandb really wrote in offline mode: the ``run-<id>.wandb`` files (leveldb-framed protobuf records).

``wandb 0.26.1`` has no ``leet inspect --json``, so this reads the records with wandb's own
``wandb.sdk.internal.datastore`` and ``wandb.proto.wandb_internal_pb2``. Each ``wandb.init`` (a new run or a
resume) writes one file (a *segment*); :func:`read_offline_runs` merges a run's segments in start order, the way
W&B does when they are synced: config and summary updates apply on top of each other, history rows append, the
last segment's exit record gives the final state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb
from wandb.sdk.internal import datastore


@dataclass
class Segment:
    path: Path
    run_id: str = ""
    start: float = 0.0
    project: str = ""
    entity: str = ""
    group: str = ""
    display_name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config_updates: list[tuple[list[str], Any]] = field(default_factory=list)
    config_removes: list[list[str]] = field(default_factory=list)
    summary_updates: list[tuple[list[str], Any]] = field(default_factory=list)
    summary_removes: list[list[str]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    raw_bytes: bytes = b""


@dataclass
class OfflineRun:
    run_id: str
    project: str
    entity: str
    group: str
    display_name: str
    job_type: str
    tags: list[str]
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]  # every row of every segment, in order (duplicates kept: tests look for them)
    segments: list[Segment]
    exit_code: int | None  # of the last segment; None if it never finished (crashed or still running)
    created_at: float

    @property
    def state(self) -> str:
        """The state W&B would show once synced: finished / failed, or crashed when the last segment has no exit."""
        if self.exit_code is None:
            return "crashed"
        return "finished" if self.exit_code == 0 else "failed"


def _path(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _value(item: Any) -> Any:
    return json.loads(item.value_json) if item.value_json else None


def read_segment(path: Path) -> Segment:
    seg = Segment(path=Path(path), raw_bytes=Path(path).read_bytes())
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    try:
        while True:
            data = store.scan_data()
            if data is None:
                break
            record = pb.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                seg.run_id = run.run_id
                seg.project = run.project
                seg.entity = run.entity
                seg.group = run.run_group
                seg.display_name = run.display_name
                seg.job_type = run.job_type
                seg.tags = list(run.tags)
                seg.start = run.start_time.seconds + run.start_time.nanos / 1e9
                seg.config_updates += [(_path(i), _value(i)) for i in run.config.update]
                seg.summary_updates += [(_path(i), _value(i)) for i in run.summary.update]
            elif kind == "config":
                seg.config_updates += [(_path(i), _value(i)) for i in record.config.update]
                seg.config_removes += [_path(i) for i in record.config.remove]
            elif kind == "summary":
                seg.summary_updates += [(_path(i), _value(i)) for i in record.summary.update]
                seg.summary_removes += [_path(i) for i in record.summary.remove]
            elif kind == "history":
                row = {".".join(_path(i)): _value(i) for i in record.history.item}
                if record.history.HasField("step"):
                    row["_step"] = record.history.step.num
                seg.history.append(row)
            elif kind == "exit":
                seg.exit_code = record.exit.exit_code
    finally:
        store.close()
    return seg


def _set(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _remove(tree: dict[str, Any], path: list[str]) -> None:
    node = tree
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def segment_files(root: Path) -> list[Path]:
    """Every ``.wandb`` file under ``root`` (skipping the ``latest-run`` symlink)."""
    return sorted(p for p in Path(root).rglob("*.wandb") if "latest-run" not in p.parts)


def read_offline_runs(root: Path) -> dict[str, OfflineRun]:
    """All runs written under ``root`` (e.g. a sweep dir), merged by run id."""
    by_id: dict[str, list[Segment]] = {}
    for path in segment_files(root):
        seg = read_segment(path)
        by_id.setdefault(seg.run_id, []).append(seg)
    runs: dict[str, OfflineRun] = {}
    for run_id, segs in by_id.items():
        segs.sort(key=lambda s: (s.start, str(s.path)))
        config: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        for seg in segs:
            for path, value in seg.config_updates:
                _set(config, path, value)
            for path in seg.config_removes:
                _remove(config, path)
            for path, value in seg.summary_updates:
                _set(summary, path, value)
            for path in seg.summary_removes:
                _remove(summary, path)
            history += seg.history
        last = segs[-1]
        runs[run_id] = OfflineRun(
            run_id=run_id,
            project=last.project,
            entity=last.entity,
            group=last.group or next((s.group for s in segs if s.group), ""),
            display_name=last.display_name,
            job_type=last.job_type,
            tags=last.tags,
            config=config,
            summary=summary,
            history=history,
            segments=segs,
            exit_code=last.exit_code,
            created_at=segs[0].start,
        )
    return runs
