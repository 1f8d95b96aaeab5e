"""`point.json`: one point's record, written by the sweep and the point process, read by
resume, the report and the point process. This module is its one home: the fields, the
atomic write (no NaN: null), the read (old files load; unknown keys are kept), marking a
point failed, and the label that names a point in tables.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvexp.config import label_skips
from kvexp.results.jsonfile import write_json

FILE = "point.json"


@dataclass
class PointRecord:
    """The fields of point.json (epoch seconds for times). Keys an older or newer kvexp
    wrote that are not fields here are kept in `extra` and written back unchanged."""

    point: str = ""
    label: str = ""
    status: str = "pending"  # pending, running, ok, failed
    error: str = ""
    overrides: list[str] = field(default_factory=list)
    traceback: str | None = None
    config_hash: str | None = None
    engine: str | None = None
    engine_reason: str | None = None
    choices: dict[str, Any] | None = None  # the columns that label the point (sweep/job.py)
    gpus: list[int] | None = None
    servers: list[dict[str, Any]] | None = None  # how each server was started
    server_reused: bool | None = None
    server_launch_time: float | None = None
    server_ready_time: float | None = None
    servers_idle_after_s: float | None = None
    start_kv_held_bytes: dict[str, int] | None = None  # shared kvcached servers, per instance
    servers_kept: bool | None = None
    servers_stopped_because: str | None = None
    job_start: float | None = None
    job_end: float | None = None
    clock_start: float | None = None
    launch_time: float | None = None
    ready_time: float | None = None
    workload_start: float | None = None
    workload_end: float | None = None
    end_time: float | None = None
    lacking_signals: dict[str, str] | None = None  # what the engine cannot measure, and why
    trace: dict[str, Any] | None = None  # per instance: what its trace plan did (TraceStats)
    summary: dict[str, Any] | None = None  # headline figures (summary.parquet has them all)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PointRecord:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names},
                   extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: fields that are set, then the extra keys."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name != "extra" and getattr(self, f.name) is not None}
        return {**d, **self.extra}


def write(meta: PointRecord | dict[str, Any], point_dir: Path) -> None:
    """Write the point's record (a dict is checked against the fields first)."""
    rec = meta if isinstance(meta, PointRecord) else PointRecord.from_dict(meta)
    write_json(rec.to_dict(), point_dir / FILE)


def read_dict(point_dir: Path) -> dict[str, Any] | None:
    """The point's record as its JSON object, keys as written (what producers update in
    place), or None if it has none or it cannot be read."""
    try:
        d = json.loads((point_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def read(point_dir: Path) -> PointRecord | None:
    """The point's record, or None if it has none or it cannot be read."""
    d = read_dict(point_dir)
    return None if d is None else PointRecord.from_dict(d)


def mark_failed(point_dir: Path, meta: dict[str, Any], error: str) -> dict[str, Any]:
    """Record the point as failed, in `meta`, point.json and its summary row (kept where
    one was written, with status and error replaced); returns `meta`."""
    from kvexp.results.store import write_summary

    meta.update(status="failed", error=error)
    write(meta, point_dir)
    path = point_dir / "summary.parquet"
    if path.exists():
        import pandas as pd

        row = pd.read_parquet(path).iloc[0].to_dict()
    else:
        row = meta.get("choices") or {"point": meta.get("point", point_dir.name),
                                      "label": meta.get("label", "")}
    write_summary({**row, "status": "failed", "error": error}, point_dir)
    return meta


def label_of(overrides: Sequence[str]) -> str:
    """A point's name in tables: its overrides, less those that do not change its results
    (the keys whose config field says so, and Hydra's own)."""
    skips = (*label_skips(), "hydra.", "hydra/")
    return " ".join(o for o in overrides if not o.startswith(skips)) or "defaults"
