"""kvcached vs static per setting and engine: paired verdicts, failures counted, the headline.

Rows come from `stats.compare_allocators` (paired t on log differences for latency, on GiB
differences for memory; Welch when runs lack partners; no verdict below MIN_PAIRS pairs).
Sim and real points never share a group: the engine is part of the group key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kvexp.report.stats import MIN_PAIRS, compare_allocators

ARMS = ("kvcached", "static")


@dataclass(frozen=True)
class Metric:
    """A compared figure: names (table, headline), catalog column, scale, digits, kind."""

    name: str
    short: str  # in the headline
    col: str
    scale: float
    digits: int
    memory: bool  # memory: raw GiB differences; latency: relative (log) differences


VERDICT_METRICS = [
    Metric("idle VRAM GiB", "idle", "idle_device_gib", 1.0, 2, True),
    Metric("peak VRAM GiB", "peak", "peak_device_gib", 1.0, 2, True),
    Metric("VRAM GiB·s/s over load", "GiB·s/s under load", "device_load_gib_per_s", 1.0, 2,
           True),
    Metric("TTFT p50 ms", "TTFT p50", "ttft_p50_s", 1e3, 1, False),
    Metric("TTFT p99 ms", "TTFT p99", "ttft_p99_s", 1e3, 1, False),
    Metric("ITL p50 ms", "ITL p50", "itl_p50_s", 1e3, 1, False),
    Metric("ITL p99 ms", "ITL p99", "itl_p99_s", 1e3, 1, False),
    Metric("E2E p50 s", "E2E p50", "e2e_p50_s", 1.0, 3, False),
    Metric("E2E p99 s", "E2E p99", "e2e_p99_s", 1.0, 3, False),
]


def _frame(cat: pd.DataFrame) -> pd.DataFrame:
    """The catalog with `engine` and `setting` filled in (a missing engine reads 'unknown')."""
    df = cat.copy()
    df["engine"] = df["engine"].fillna("unknown").astype(str) if "engine" in df else "unknown"
    df["setting"] = df["setting"].fillna("").astype(str)
    return df


def _int(x: object) -> int:
    v = pd.to_numeric(x, errors="coerce")
    return 0 if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def arm_counts(grp: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per arm: ok points, failed points, requests used (ok) and failed requests."""
    out = {}
    for arm in ARMS:
        g = grp[grp["allocator"] == arm]
        ok = g[g["status"] == "ok"]
        req = sum(_int(v) for v in ok.get("requests", pd.Series(dtype=float)))
        failed = sum(_int(v) for v in ok.get("failed", pd.Series(dtype=float)))
        out[arm] = {"points": len(ok), "failed_points": len(g) - len(ok),
                    "used_requests": req - failed, "failed_requests": failed}
    return out


def _unit(m: Metric) -> str:
    return "GiB·s/s" if "GiB·s/s" in m.name else "GiB·s" if "GiB·s" in m.name else "GiB"


def _median(values: pd.Series, scale: float, digits: int) -> str:
    arr = pd.to_numeric(values, errors="coerce").to_numpy(float)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return "-"
    return f"{float(np.median(arr)) * scale:.{digits}f} (n={arr.size})"


def _failure_note(counts: dict[str, dict[str, int]]) -> str:
    notes = [f"{arm}: {c['failed_requests']} failed requests" for arm, c in counts.items()
             if c["failed_requests"]]
    return f" ({'; '.join(notes)})" if notes else ""


@dataclass(frozen=True)
class Row:
    """One compared metric of one setting and engine."""

    setting: str
    engine: str
    metric: Metric
    v: dict[str, Any]  # a compare_allocators row
    text: str
    counts: dict[str, dict[str, int]]
    kvcached: str
    static: str


def verdict_rows(cat: pd.DataFrame) -> list[Row]:
    """One row per (setting, engine, metric) with both arms present: verdict and counts."""
    if cat.empty or "allocator" not in cat:
        return []
    df = _frame(cat)
    rows: list[Row] = []
    for (setting, engine), grp in df.groupby(["setting", "engine"], sort=False):
        counts = arm_counts(grp)
        ok = grp[grp["status"] == "ok"]
        if not all(counts[a]["points"] for a in ARMS):
            continue
        for m in VERDICT_METRICS:
            if m.col not in ok or not np.isfinite(pd.to_numeric(
                    ok[m.col], errors="coerce").to_numpy(float)).any():
                continue
            scaled = ok.assign(**{m.col: pd.to_numeric(ok[m.col], errors="coerce") * m.scale})
            (v,) = compare_allocators(scaled, m.col, by=(), log=not m.memory,
                                      unit=_unit(m) if m.memory else "",
                                      digits=m.digits)
            text = str(v["text"])
            if not m.memory:
                text += _failure_note(counts)
            rows.append(Row(str(setting) or "(defaults)", str(engine), m, v, text, counts,
                            _median(ok[ok["allocator"] == "kvcached"][m.col], m.scale,
                                    m.digits),
                            _median(ok[ok["allocator"] == "static"][m.col], m.scale,
                                    m.digits)))
    return rows


def _estimate(v: dict[str, Any], m: Metric) -> tuple[str, str]:
    est, low, high = (float(v[k]) for k in ("estimate", "low", "high"))
    if math.isnan(est):
        return "-", "-"
    if m.memory:
        unit = " " + _unit(m)
        return (f"{est:+.{m.digits}f}{unit}", "-" if math.isnan(low) else
                f"[{low:+.{m.digits}f}, {high:+.{m.digits}f}]{unit}")
    return (f"{est * 100:+.1f}%", "-" if math.isnan(low) else
            f"[{low * 100:+.1f}%, {high * 100:+.1f}%]")


def comparison_table(cat: pd.DataFrame) -> pd.DataFrame:
    """kvcached vs static per setting and engine: medians, estimate, 95% interval, n pairs,
    method, verdict, and per arm the requests used/failed and failed points."""
    out = []
    for r in verdict_rows(cat):
        v, c = r.v, r.counts
        est, ci = _estimate(v, r.metric)
        out.append({
            "setting": r.setting, "engine": r.engine, "metric": r.metric.name,
            "kvcached median": r.kvcached, "static median": r.static,
            "kvcached - static": est, "95% CI": ci,
            "n pairs": str(v["n"] if v["method"] == "paired t" else 0),
            "method": v["method"], "verdict": r.text,
            **{f"{a} req used/failed": f"{c[a]['used_requests']}/{c[a]['failed_requests']}"
               for a in ARMS},
            **{f"{a} failed points": str(c[a]["failed_points"]) for a in ARMS},
        })
    return pd.DataFrame(out)


def headline_lines(cat: pd.DataFrame) -> list[str]:
    """Per setting and engine, a few lines: memory saved, then the latency verdicts."""
    lines: list[str] = []
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in verdict_rows(cat):
        groups.setdefault((r.setting, r.engine), []).append(r)
    for (setting, engine), rows in groups.items():
        kind = "simulated" if engine == "sim" else "measured"
        kv, st = rows[0].counts["kvcached"], rows[0].counts["static"]
        pairs = max(int(r.v["n"]) if r.v["method"] == "paired t" else 0 for r in rows)
        lines.append(f"{setting}, engine {engine} ({kind}): {pairs} pairs; kvcached "
                     f"{kv['points']} ok / {kv['failed_points']} failed points, static "
                     f"{st['points']} ok / {st['failed_points']} failed"
                     + ("" if pairs >= MIN_PAIRS else
                        f"; no verdict: a verdict needs {MIN_PAIRS} pairs"))
        mem = [r for r in rows if r.metric.memory]
        lat = [r for r in rows if not r.metric.memory]
        if mem:
            lines.append("memory saved by kvcached: " + "; ".join(map(_item, mem)))
        if lat:
            lines.append("latency, kvcached vs static: " + "; ".join(map(_item, lat)))
    return lines


def _item(r: Row) -> str:
    m, v = r.metric, r.v
    if m.memory:  # as memory saved: static - kvcached
        unit, d = _unit(m), m.digits
        est, low, high = (-float(v[k]) for k in ("estimate", "high", "low"))
        ci = "" if math.isnan(low) else f" [{low:.{d}f}, {high:.{d}f}]"
        return f"{m.short} {est:.{d}f} {unit}{ci} n={v['n']}"
    est, ci = _estimate(v, m)
    return f"{m.short} {est} {ci} n={v['n']} ({v['status']}){_failure_note(r.counts)}"
