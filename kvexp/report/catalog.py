"""The point catalog: one row per point (config choices, status, figures, elasticity).

`catalog(results)` joins summary.parquet, point.json and raw-data figures, and names each
point's `group` (runs of one config) and `setting` (the kvcached/static pair key).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from kvexp.report.elasticity import elasticity_table
from kvexp.results import Results
from kvexp.results.point_record import read_dict
from kvexp.results.summary import latency_figures, memory_figures

ALLOCATOR_KEYS = ("allocator", "allocator.kind")
REPEAT_KEYS = ("repeat",)
GIB = 2**30
META_COLS = ("label", "status", "error", "engine", "engine_reason", "ready_time",
             "workload_start", "workload_end", "end_time", "clock_start")


def parse_overrides(text: Any) -> dict[str, str]:
    """'k=v k2=v2' (or a list of 'k=v') as a dict; keys lose Hydra's +/~ prefixes."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return {}
    items = text.split() if isinstance(text, str) else list(text)
    out: dict[str, str] = {}
    for item in items:
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.lstrip("+~")] = v
    return out


def _join(params: dict[str, str], drop: tuple[str, ...]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items() if k not in drop)


def _point_json(root: Path, name: str) -> dict[str, Any]:
    """A point's point.json (lists included), or {} if it has none."""
    d = root / name
    if not (d / "point.json").exists() and root.name == name:
        d = root
    return read_dict(d) or {}


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def catalog(results: Results) -> pd.DataFrame:
    """One row per point: config choices, status, error, figures and elasticity metrics.

    Columns added here: `params` (dict of the point's overrides), `group` (its settings without
    `repeat`: runs of one group are repeats), `setting` (without `repeat` and the allocator:
    the kvcached/static pair key) and `simulated` (its device is the sim's).
    """
    names = list(dict.fromkeys(
        list(results.points.get("point", pd.Series(dtype=str)))
        + list(results.summary.get("point", pd.Series(dtype=str)))
    ))
    summ = results.summary.set_index("point") if "point" in results.summary else pd.DataFrame()
    pts = results.points.set_index("point") if "point" in results.points else pd.DataFrame()
    rows: list[dict[str, Any]] = []
    for name in names:
        row: dict[str, Any] = {"point": name}
        meta = pts.loc[name].to_dict() if name in pts.index else {}
        srow = summ.loc[name].to_dict() if name in summ.index else {}
        row.update({k: v for k, v in meta.items()})
        row.update({k: v for k, v in srow.items() if not (k in row and _isna(v))})
        info = _point_json(results.root, name)
        overrides = srow.get("overrides")
        if _isna(overrides) or overrides is None:
            overrides = info.get("overrides") or row.get("label") or ""
        params = parse_overrides(overrides)
        row["params"] = params
        if _isna(row.get("allocator")) or not row.get("allocator"):
            row["allocator"] = next((params[k] for k in ALLOCATOR_KEYS if k in params), "")
        if _isna(row.get("repeat")):
            row["repeat"] = _num(params.get("repeat", 0))
        row.setdefault("status", "unknown")
        if _isna(row.get("error")):
            row["error"] = ""
        if not srow:
            row.update(_figures_from_raw(results, name, meta))
        rows.append(row)
    cat = pd.DataFrame(rows)
    if cat.empty:
        return cat
    _shorten(cat)
    el = elasticity_table(results.memory, results.requests, cat[["point", *[
        c for c in META_COLS if c in cat]]])
    cat = cat.merge(el, on="point", how="left")
    mem = results.memory
    sim_points = set(mem.loc[mem["source"] == "sim_device", "point"]) if not mem.empty else set()
    cat["simulated"] = cat["point"].isin(sim_points) | (cat.get("engine") == "sim")
    if "n_instances" not in cat:
        cat["n_instances"] = 1
    return cat


def common_params(cat: pd.DataFrame) -> dict[str, str]:
    """Overrides every point shares (same key, same value): shown once, not in every label."""
    dicts = list(cat["params"])
    if len(dicts) < 2:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def _shorten(cat: pd.DataFrame) -> None:
    """Labels, groups and settings from the overrides that differ between points."""
    common = common_params(cat)
    varying = [{k: v for k, v in p.items() if k not in common} for p in cat["params"]]
    cat["label_full"] = cat.get("label", pd.Series("", index=cat.index)).fillna("")
    short = [_join(p, REPEAT_KEYS) for p in varying]
    cat["label"] = [s or full or "defaults" for s, full in zip(short, cat["label_full"],
                                                               strict=True)]
    cat["group"] = short
    cat["setting"] = [_join(p, REPEAT_KEYS + ALLOCATOR_KEYS) for p in varying]


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _figures_from_raw(results: Results, name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """summary.py's figures for a point that has raw data but no summary row."""
    mem = results.memory[results.memory["point"] == name] if not results.memory.empty else None
    req = results.requests[results.requests["point"] == name] if not results.requests.empty \
        else None
    out: dict[str, Any] = {}
    if mem is not None and not mem.empty:
        out.update(memory_figures(mem, meta))
    if req is not None and not req.empty:
        out.update(latency_figures(req, meta))
    return out
