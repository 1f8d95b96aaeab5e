"""Elasticity metrics: how fast memory follows the load, and what it costs over time.

Definitions (all from the point's own samples, on its one clock):

- Wave: the requests of one `wave` index; it starts at their first `sent_time` and ends at
  their last `end_time`. A point without wave indices is one wave spanning its workload window.
- Pre-wave level: the median of the signal's samples in the `lookback_s` (1 s) before the wave
  starts; if there are none, the last sample before it.
- Threshold: max(one page, 1% of the pre-wave level); a page is kvcached's 2 MiB.
- Time to grow: from the wave's start to the first sample at or after it whose value exceeds
  the pre-wave level by more than the threshold, searched until the next wave starts.
  NaN when the signal did not grow (a static pool never does).
- Time to release: from the wave's end to the first sample at or after it whose value is back
  within the threshold of the pre-wave level (or below it), searched until the next wave
  starts (or the series ends). NaN if it was never released in that time, or never grew.
- Idle footprint: the median of the signal over the idle window [ready, workload start).
- Memory integral: the signal integrated over time (trapezoid between samples, linear
  interpolation at the window's edges), in GiB x s, over the load window
  [workload start, workload end] and over the whole sampled run.
- KV efficiency: over the load window, the mean of kv_used / kv_held (kvcached's segment,
  summed over instances per sampling tick); for a static pool, the mean of the engine's
  kv_cache_usage, i.e. the used fraction of a pool that is held in full all the time.

The signals are the device's used memory (`device`) and kvcached's held KV memory (`kv_held`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kvexp.results.summary import GIB, device_series, kv_held_series, per_tick

PAGE_BYTES = 2 * 2**20
REL_THRESHOLD = 0.01
LOOKBACK_S = 1.0
SIGNALS = ("device", "kv_held")


@dataclass(frozen=True)
class Wave:
    """One wave of requests: index and [start, end] in epoch seconds."""

    index: int
    start: float
    end: float


@dataclass(frozen=True)
class WaveElasticity:
    """How one signal followed one wave (times in s; NaN where it did not happen)."""

    wave: Wave
    pre_level: float  # bytes
    threshold: float  # bytes
    peak: float  # bytes, max within [start, next wave start)
    grow_s: float
    release_s: float

    @property
    def grew(self) -> bool:
        return not math.isnan(self.grow_s)

    @property
    def released(self) -> bool:
        return not math.isnan(self.release_s)


def threshold(level: float, page_bytes: float = PAGE_BYTES, rel: float = REL_THRESHOLD) -> float:
    """The growth/release threshold above a level: max(one page, rel x level)."""
    return max(page_bytes, rel * level) if not math.isnan(level) else page_bytes


def waves_of(requests: pd.DataFrame, meta: dict[str, Any] | None = None) -> list[Wave]:
    """The waves of one point's requests; one wave over the workload window if unindexed."""
    meta = meta or {}
    out: list[Wave] = []
    if not requests.empty and "wave" in requests:
        for idx, grp in requests[requests["wave"] >= 0].groupby("wave"):
            start = float(grp["sent_time"].min())
            ends = grp["end_time"].dropna()
            end = float(ends.max()) if not ends.empty else float(grp["sent_time"].max())
            out.append(Wave(int(idx), start, max(start, end)))
    if out:
        return sorted(out, key=lambda w: w.start)
    w0, w1 = _num(meta.get("workload_start")), _num(meta.get("workload_end"))
    if not math.isnan(w0) and not math.isnan(w1) and w1 >= w0:
        return [Wave(-1, w0, w1)]
    if not requests.empty:
        ends = requests["end_time"].dropna()
        start = float(requests["sent_time"].min())
        end = float(ends.max()) if not ends.empty else start
        return [Wave(-1, start, max(start, end))]
    return []


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _sorted(times: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = ~(np.isnan(t) | np.isnan(v))
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    return t[order], v[order]


def pre_level(t: np.ndarray, v: np.ndarray, start: float, lookback_s: float = LOOKBACK_S) -> float:
    """Median of the samples in [start - lookback_s, start); else the last one before start."""
    sel = (t >= start - lookback_s) & (t < start)
    if sel.any():
        return float(np.median(v[sel]))
    before = t < start
    return float(v[before][-1]) if before.any() else math.nan


def wave_elasticity(
    times: Any,
    values: Any,
    waves: list[Wave],
    page_bytes: float = PAGE_BYTES,
    rel: float = REL_THRESHOLD,
    lookback_s: float = LOOKBACK_S,
) -> list[WaveElasticity]:
    """Time to grow and to release for each wave of one signal (bytes over epoch seconds)."""
    t, v = _sorted(times, values)
    out: list[WaveElasticity] = []
    ordered = sorted(waves, key=lambda w: w.start)
    for i, wave in enumerate(ordered):
        limit = ordered[i + 1].start if i + 1 < len(ordered) else math.inf
        level = pre_level(t, v, wave.start, lookback_s)
        thr = threshold(level, page_bytes, rel)
        span = (t >= wave.start) & (t < limit)
        peak = float(v[span].max()) if span.any() else math.nan
        grow = release = math.nan
        if not math.isnan(level):
            up = span & (v > level + thr)
            if up.any():
                grow = float(t[up][0] - wave.start)
                back = (t >= wave.end) & (t < limit) & (v <= level + thr)
                if back.any():
                    release = float(t[back][0] - wave.end)
        out.append(WaveElasticity(wave, level, thr, peak, grow, release))
    return out


def integral_gib_s(times: Any, values: Any, t0: float | None = None,
                   t1: float | None = None) -> float:
    """Integral of a bytes series over [t0, t1] (clipped to the samples), in GiB x s."""
    t, v = _sorted(times, values)
    if t.size < 2:
        return math.nan
    lo = t[0] if t0 is None or math.isnan(t0) else max(float(t0), t[0])
    hi = t[-1] if t1 is None or math.isnan(t1) else min(float(t1), t[-1])
    if hi <= lo:
        return math.nan
    inside = (t > lo) & (t < hi)
    tt = np.concatenate([[lo], t[inside], [hi]])
    vv = np.concatenate([[np.interp(lo, t, v)], v[inside], [np.interp(hi, t, v)]])
    return float(np.sum((vv[1:] + vv[:-1]) / 2.0 * np.diff(tt)) / GIB)


def kv_efficiency(memory: pd.DataFrame, t0: float, t1: float) -> tuple[float, str]:
    """Mean used/held KV fraction over [t0, t1], and which figure it came from."""
    if memory.empty or math.isnan(t0) or math.isnan(t1):
        return math.nan, ""
    used = per_tick(memory, "kvcached", "kv_used_bytes", "sum")
    held = per_tick(memory, "kvcached", "kv_held_bytes", "sum")
    if not held.empty:
        both = pd.concat([used.rename("used"), held.rename("held")], axis=1).dropna()
        both = both[(both.index >= t0) & (both.index <= t1) & (both["held"] > 0)]
        if not both.empty:
            return float((both["used"] / both["held"]).mean()), "kv_used/kv_held"
    usage = per_tick(memory, "engine", "kv_cache_usage", "mean")
    usage = usage[(usage.index >= t0) & (usage.index <= t1)]
    if not usage.empty:
        return float(usage.mean()), "engine kv_cache_usage"
    return math.nan, ""


def signal_series(memory: pd.DataFrame, signal: str) -> pd.DataFrame:
    """A signal's samples as columns time, value (bytes)."""
    if memory.empty:
        return pd.DataFrame(columns=["time", "value"])
    df = device_series(memory) if signal == "device" else kv_held_series(memory)
    return df[["time", "value"]] if not df.empty else pd.DataFrame(columns=["time", "value"])


def _median(xs: list[float]) -> float:
    arr = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    return float(np.median(arr)) if arr.size else math.nan


def point_elasticity(
    memory: pd.DataFrame, requests: pd.DataFrame, meta: dict[str, Any]
) -> dict[str, Any]:
    """One point's elasticity figures, flat: `<signal>_grow_s`, `<signal>_release_s`, ..."""
    waves = waves_of(requests, meta)
    ready = _num(meta.get("ready_time"))
    w0, w1 = _num(meta.get("workload_start")), _num(meta.get("workload_end"))
    out: dict[str, Any] = {"waves": len(waves)}
    for sig in SIGNALS:
        s = signal_series(memory, sig)
        t, v = s["time"].to_numpy(float), s["value"].to_numpy(float)
        per_wave = wave_elasticity(t, v, waves) if len(t) else []
        out[f"{sig}_grow_s"] = _median([w.grow_s for w in per_wave])
        out[f"{sig}_release_s"] = _median([w.release_s for w in per_wave])
        out[f"{sig}_waves_grew"] = sum(w.grew for w in per_wave)
        out[f"{sig}_waves_released"] = sum(w.released for w in per_wave)
        idle = s[(s["time"] >= ready) & (s["time"] < w0)]["value"] if len(t) else s["value"]
        out[f"{sig}_idle_gib"] = float(idle.median()) / GIB if len(idle) else math.nan
        out[f"{sig}_load_gib_s"] = integral_gib_s(t, v, w0, w1) if len(t) else math.nan
        out[f"{sig}_run_gib_s"] = integral_gib_s(t, v) if len(t) else math.nan
    out["kv_efficiency"], out["kv_efficiency_basis"] = kv_efficiency(memory, w0, w1)
    return out


def elasticity_table(memory: pd.DataFrame, requests: pd.DataFrame,
                     points: pd.DataFrame) -> pd.DataFrame:
    """`point_elasticity` for every point of a sweep, one row each (with a `point` column)."""
    rows = []
    for _, meta in points.iterrows():
        name = meta["point"]
        mem = memory[memory["point"] == name] if "point" in memory else memory.iloc[0:0]
        req = requests[requests["point"] == name] if "point" in requests else requests.iloc[0:0]
        rows.append({"point": name, **point_elasticity(mem, req, meta.to_dict())})
    return pd.DataFrame(rows)
