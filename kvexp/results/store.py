"""Parquet results of sweep points: schema, atomic writes, and `load(sweep_dir)`.

A point folder holds:
  config.yaml      the resolved config the point ran with
  point.json       status, error, engine choice, phase timestamps, server argv + env
  requests.parquet one row per request (failed ones included)
  memory.parquet   timestamped samples (source, instance, metric, value), long format
  summary.parquet  one row: the point's config choices and headline figures
  requests.jsonl, memory.jsonl  while the point runs: its journals (journal.py), folded
                   into the Parquet files at its end
  logs/            server logs
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kvexp.results.jsonfile import atomic_path, write_json
from kvexp.results.records import RequestRow, Sample

__all__ = ["write_json"]  # one JSON writer: jsonfile.py

REQUESTS_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("instance", pa.string()),
        ("wave", pa.int64()),
        ("api", pa.string()),
        ("scheduled_time", pa.float64()),
        ("sent_time", pa.float64()),
        ("send_lag_s", pa.float64()),
        ("first_token_time", pa.float64()),
        ("end_time", pa.float64()),
        ("ttft_s", pa.float64()),
        ("e2e_s", pa.float64()),
        ("tpot_s", pa.float64()),
        ("itl_s", pa.list_(pa.float64())),
        ("tokens_per_event", pa.list_(pa.int64())),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("max_tokens", pa.int64()),
        ("status", pa.int64()),
        ("ok", pa.bool_()),
        ("error", pa.string()),
        ("slo_ok", pa.bool_()),  # ok and within every SLO (kvexp/results/slo.py)
        ("engine", pa.string()),  # the point's engine kind: "sim" rows are simulated
    ]
)

MEMORY_SCHEMA = pa.schema(
    [
        ("time", pa.float64()),  # epoch seconds, the point's one clock
        ("t_s", pa.float64()),  # seconds since the point started
        ("source", pa.string()),
        ("instance", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("engine", pa.string()),
    ]
)

def _atomic_write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def requests_table(rows: list[RequestRow], slos: dict[str, Any] | None = None,
                   engine: str = "") -> pa.Table:
    """The rows as REQUESTS_SCHEMA; `slo_ok` against each instance's SloConfig in `slos`
    (none: ok); every row carries the point's `engine`."""
    from kvexp.results.slo import meets_slo

    data = [{**asdict(r), "slo_ok": meets_slo(r, (slos or {}).get(r.instance)),
             "engine": engine} for r in rows]
    return pa.Table.from_pylist(data, schema=REQUESTS_SCHEMA)


def memory_table(samples: list[Sample], start: float, engine: str = "") -> pa.Table:
    """The samples as MEMORY_SCHEMA (long format); `t_s` counts from `start`."""
    cols: dict[str, list] = {name: [] for name in MEMORY_SCHEMA.names}
    for s in samples:
        cols["time"].append(s.time)
        cols["t_s"].append(s.time - start)
        cols["source"].append(s.source)
        cols["instance"].append(s.instance)
        cols["metric"].append(s.metric)
        cols["value"].append(float(s.value))
        cols["engine"].append(engine)
    return pa.table(cols, schema=MEMORY_SCHEMA)


def write_requests(rows: list[RequestRow], point_dir: Path,
                   slos: dict[str, Any] | None = None, engine: str = "") -> None:
    """requests.parquet (see `requests_table`)."""
    _atomic_write_table(requests_table(rows, slos, engine), point_dir / "requests.parquet")


def write_memory(samples: list[Sample], start: float, point_dir: Path, engine: str = "") -> None:
    """memory.parquet (see `memory_table`)."""
    _atomic_write_table(memory_table(samples, start, engine), point_dir / "memory.parquet")


def write_summary(summary: dict[str, Any], point_dir: Path) -> None:
    _atomic_write_table(pa.Table.from_pylist([summary]), point_dir / "summary.parquet")
