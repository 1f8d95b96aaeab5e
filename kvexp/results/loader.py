"""Reading a sweep back: every point's tables and point.json (`load(sweep_dir)`).

A point that left journals but no Parquet files (its process and the sweep's were both
killed) is read from its journals, its summary computed from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kvexp.results import journal
from kvexp.results.point_record import read_dict
from kvexp.results.store import MEMORY_SCHEMA, REQUESTS_SCHEMA, memory_table, requests_table

UNFOLDED = ("unfinished: its results were never written (the point is still running, or its "
            "process and the sweep's were killed); read from its journals")


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


def _slos(point_dir: Path) -> dict[str, Any] | None:
    """Each instance's SLO from the point's config.yaml (None where it cannot be read)."""
    from omegaconf import OmegaConf

    from kvexp.config import resolve_instances, to_config

    try:
        cfg = to_config(OmegaConf.load(point_dir / "config.yaml"))
        return {i.name: i.slo for i in resolve_instances(cfg)}
    except Exception:  # noqa: BLE001 - an old or broken config: rows count without SLOs
        return None


def _journaled(point_dir: Path, info: dict[str, Any], engine: str
               ) -> dict[str, pa.Table] | None:
    """The tables of a point that left journals and no Parquet files, else None."""
    if (point_dir / "requests.parquet").exists() or not journal.exists(point_dir):
        return None
    rows, samples = journal.read_rows(point_dir), journal.read_samples(point_dir)
    start = info.get("clock_start") or min([s.time for s in samples], default=0.0)
    return {"requests": requests_table(rows, _slos(point_dir), engine),
            "memory": memory_table(samples, start, engine)}


def _summary(tables: dict[str, pa.Table], info: dict[str, Any]) -> pa.Table:
    """A summary row computed from a point's journaled tables."""
    from kvexp.results.summary import summarize

    meta = dict(info)
    if meta.get("status") in (None, "pending", "running"):
        meta["error"] = meta.get("error") or UNFOLDED
    last = pc.max(tables["memory"]["time"]).as_py() if len(tables["memory"]) else None
    meta.setdefault("end_time", last)
    if meta.get("workload_start") and not meta.get("workload_end"):
        meta["workload_end"] = meta["end_time"]
    row = summarize(tables["requests"].to_pandas(), tables["memory"].to_pandas(), meta,
                    meta.get("choices") or {"point": meta.get("point", ""),
                                            "label": meta.get("label", "")})
    return pa.Table.from_pylist([row])


def _read(path: Path | pa.Table, point: str, engine: str) -> pd.DataFrame | None:
    """A point's table with its `point` and `engine` (from point.json where rows lack one)."""
    if isinstance(path, Path) and not path.exists():
        return None
    df = (pq.read_table(path) if isinstance(path, Path) else path).to_pandas()
    if "point" in df:
        df = df.drop(columns="point")
    df.insert(0, "point", point)
    if "engine" not in df:
        df["engine"] = engine
    df["engine"] = df["engine"].replace("", None).fillna(engine).astype(str)
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
        info = read_dict(d)
        engine = str((info or {}).get("engine") or "unknown")
        tables: dict[str, Any] = _journaled(d, info or {}, engine) or {}
        if tables and not (d / "summary.parquet").exists():
            tables["summary"] = _summary(tables, {"point": name, **(info or {})})
        for acc, fname in ((req, "requests"), (mem, "memory"), (summ, "summary")):
            df = _read(tables.get(fname, d / f"{fname}.parquet"), name, engine)
            if df is not None:
                acc.append(df)
        if info is not None:
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
