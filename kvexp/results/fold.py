"""Folding a point's measurements into its files: `write_point` at the point's end (its
Parquet tables, summary and point.json), `salvage` for a point whose process was killed
before it could (from its journals, kvexp/results/journal.py)."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kvexp import results
from kvexp.config import Config, resolve_instances
from kvexp.results import journal, point_record
from kvexp.results.records import RequestRow, Sample
from kvexp.results.summary import summarize


def write_point(
    point_dir: Path, rows: list[RequestRow], samples: list[Sample], meta: dict[str, Any],
    start: float, slos: dict[str, Any] | None = None,
) -> None:
    engine = str(meta.get("engine") or "")
    results.write_requests(rows, point_dir, slos, engine)
    results.write_memory(samples, start, point_dir, engine)
    req = pd.read_parquet(point_dir / "requests.parquet")
    mem = pd.read_parquet(point_dir / "memory.parquet")
    summary = summarize(req, mem, meta, meta.get("choices", {}))
    results.write_summary(summary, point_dir)
    with contextlib.suppress(KeyError):
        meta["summary"] = {k: summary[k] for k in ("idle_device_gib", "peak_device_gib",
                                                   "e2e_p50_s", "failed", "slo_attainment",
                                                   "goodput_req_per_s")}
    point_record.write(meta, point_dir)


def exit_text(rc: int) -> str:
    """What a point process's exit status says: killed by which signal, or its code."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        why = " (the OOM killer sends it too)" if -rc == signal.SIGKILL else ""
        return f"point process killed by {name}{why}"
    return f"point process exited with code {rc}"


def salvage(cfg: Config, point_dir: Path, meta: dict[str, Any], rc: int) -> dict[str, Any]:
    """A point whose process ended without recording its end (killed, say): `failed` with
    why, and the rows and samples it journaled folded into its Parquet files and summary.
    Without journals (its process died before opening them) only its record and summary
    are marked."""
    error = exit_text(rc)
    if not journal.exists(point_dir):
        return point_record.mark_failed(point_dir, meta, error)
    rows, samples = journal.read_rows(point_dir), journal.read_samples(point_dir)
    last = max([s.time for s in samples] + [r.end_time or 0.0 for r in rows], default=0.0)
    meta.update(status="failed", error=f"{error}; what it measured until then is kept")
    meta.setdefault("end_time", last or time.time())
    if meta.get("workload_start") and not meta.get("workload_end"):
        meta["workload_end"] = meta["end_time"]
    start = meta.get("clock_start") or min([s.time for s in samples], default=0.0)
    try:
        write_point(point_dir, rows, samples, meta, start,
                    {i.name: i.slo for i in resolve_instances(cfg)})
    except OSError as e:  # disk full: the journals stay, `load` reads them
        meta["error"] += f"; its Parquet files could not be written ({e})"
        with contextlib.suppress(OSError):
            point_record.write(meta, point_dir)
        return meta
    journal.remove(point_dir)
    return meta
