"""Parquet results of sweep points: schema, atomic writes, and `load(sweep_dir)`.

A point folder holds:
  config.yaml      the resolved config the point ran with
  point.json       status, error, engine choice, phase timestamps, server argv + env
  requests.parquet one row per request (failed ones included)
  memory.parquet   timestamped samples (source, instance, metric, value), long format
  summary.parquet  one row: the point's config choices and headline figures
  logs/            server logs
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kvexp.results.records import RequestRow, Sample

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
    ]
)

def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def write_requests(rows: list[RequestRow], point_dir: Path) -> None:
    data = [asdict(r) for r in rows]
    table = pa.Table.from_pylist(data, schema=REQUESTS_SCHEMA)
    _atomic_write_table(table, point_dir / "requests.parquet")


def write_memory(samples: list[Sample], start: float, point_dir: Path) -> None:
    cols: dict[str, list] = {name: [] for name in MEMORY_SCHEMA.names}
    for s in samples:
        cols["time"].append(s.time)
        cols["t_s"].append(s.time - start)
        cols["source"].append(s.source)
        cols["instance"].append(s.instance)
        cols["metric"].append(s.metric)
        cols["value"].append(float(s.value))
    _atomic_write_table(pa.table(cols, schema=MEMORY_SCHEMA), point_dir / "memory.parquet")


def write_summary(summary: dict[str, Any], point_dir: Path) -> None:
    _atomic_write_table(pa.Table.from_pylist([summary]), point_dir / "summary.parquet")


@dataclass
class Results:
    """A sweep's (or one point's) tables, each with a `point` column naming the point folder."""

    root: Path
    requests: pd.DataFrame
    memory: pd.DataFrame
    summary: pd.DataFrame
    points: pd.DataFrame  # point.json of each point, flattened


def point_dirs(root: Path) -> list[Path]:
    """Point folders under a sweep folder (or the folder itself if it is a point)."""
    root = Path(root)
    if (root / "point.json").exists() or (root / "config.yaml").exists():
        return [root]
    found = [p.parent for p in root.glob("*/point.json")]
    found += [p.parent for p in root.glob("*/config.yaml") if p.parent not in found]
    return sorted(set(found), key=lambda p: (len(p.name), p.name))


def _read(path: Path, point: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    df = pq.read_table(path).to_pandas()
    if "point" in df:
        df = df.drop(columns="point")
    df.insert(0, "point", point)
    return df


def load(root: str | Path) -> Results:
    """Every point's tables under `root` (a sweep folder or one point folder)."""
    root = Path(root)
    dirs = point_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"no kvexp points under {root}")
    req, mem, summ, meta = [], [], [], []
    for d in dirs:
        name = d.name if d != root else root.name
        for acc, fname in ((req, "requests"), (mem, "memory"), (summ, "summary")):
            df = _read(d / f"{fname}.parquet", name)
            if df is not None:
                acc.append(df)
        if (d / "point.json").exists():
            info = json.loads((d / "point.json").read_text())
            info = {k: v for k, v in info.items() if not isinstance(v, (dict, list))}
            meta.append({"point": name, **info})

    def cat(frames: list[pd.DataFrame], schema: pa.Schema | None) -> pd.DataFrame:
        if frames:
            return pd.concat(frames, ignore_index=True)
        cols = ["point"] + (schema.names if schema is not None else [])
        return pd.DataFrame(columns=cols)

    return Results(
        root=root,
        requests=cat(req, REQUESTS_SCHEMA),
        memory=cat(mem, MEMORY_SCHEMA),
        summary=cat(summ, None),
        points=pd.DataFrame(meta),
    )
