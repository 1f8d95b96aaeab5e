"""Reading a sweep back: every point's tables and point.json (`load(sweep_dir)`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kvexp.results.point_record import read_dict
from kvexp.results.store import MEMORY_SCHEMA, REQUESTS_SCHEMA


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


def _read(path: Path, point: str, engine: str) -> pd.DataFrame | None:
    """A point's table with its `point` and `engine` (from point.json where rows lack one)."""
    if not path.exists():
        return None
    df = pq.read_table(path).to_pandas()
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
        for acc, fname in ((req, "requests"), (mem, "memory"), (summ, "summary")):
            df = _read(d / f"{fname}.parquet", name, engine)
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
