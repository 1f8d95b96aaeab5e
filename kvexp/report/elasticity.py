"""Elasticity metrics: how fast memory follows the load, and what it costs over time.

Definitions (all from the point's own samples, on its one clock):

- Wave: the requests of one `wave` index; it starts at their first `sent_time` and ends at
  their last `end_time`. A point without wave indices is one wave spanning its workload window.
- Pre-wave level: the median of the signal's samples in the `lookback_s` (1 s) before the wave
  starts; if there are none, the last sample before it.
- Threshold: one kvcached page step, absolute (not a share of the level). kvcached counts
  `pages x page_size x num_layers x num_kv_buffers` in its segment; on the H200 (vLLM 0.26,
  kvcached 0.1.6, contiguous layout) the step was 48 MiB = 2 MiB x 24 layers, i.e.
  page_size_mb x num_layers. Taken from meta `kv_page_bytes` if given, else inferred from
  the segment (the largest step all its used/prealloc figures are multiples of, at least
  2 MiB), else 2 MiB (a static pool has no pages).
- Time to grow: from the wave's start to the first sample at or after it at least one page
  above the pre-wave level, searched until the next wave starts. NaN when the signal did
  not grow (a static pool never does), or when the reserve absorbed the demand.
- Absorbed by reserve: kvcached's used KV grew by at least a page during the wave, by no more
  than its pre-wave prealloc (the pre-mapped reserve): the demand was served without new
  mappings. Held memory may grow later as kvcached refills its reserve; that is reported as
  `refill_s`, not as a (slow) grow.
- Time to release: from the wave's end to the first sample at or after it that is less than
  a page above the pre-wave level, searched until the next wave starts (or the series ends).
  NaN if it was never released in that time, or never grew.
- Sampling interval: the median gap between the signal's samples; a time is only known to
  within it, so it is reported beside every time (`<signal>_interval_s`).
- Idle footprint: the median of the signal over the idle window [ready, workload start).
- Memory integral: the signal integrated over time (trapezoid between samples, linear
  interpolation at the window's edges), in GiB x s, over the load window
  [workload start, workload end] and over the whole sampled run; and per second of its
  window (`<signal>_<window>_gib_per_s`, GiB x s / s, beside the window's `_s`), which is
  what compares points whose windows differ in length.
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

from kvexp.report.kvcached_series import PAGE_BYTES, KvDemand, kv_demand, kv_sum, page_bytes_of
from kvexp.results.summary import GIB, device_series, per_tick

LOOKBACK_S = 1.0
GREW, ABSORBED, NO_GROWTH = "grew", "absorbed by reserve", "no growth"
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
    threshold: float  # bytes: one page
    peak: float  # bytes, max within [start, next wave start)
    grow_s: float
    release_s: float
    outcome: str = NO_GROWTH  # GREW, ABSORBED or NO_GROWTH
    refill_s: float = math.nan  # absorbed rounds: when held grew anyway (reserve refilled)
    interval_s: float = math.nan  # the signal's sampling interval

    @property
    def grew(self) -> bool:
        return not math.isnan(self.grow_s)

    @property
    def absorbed(self) -> bool:
        return self.outcome == ABSORBED

    @property
    def released(self) -> bool:
        return not math.isnan(self.release_s)


def sampling_interval(times: Any) -> float:
    """The median gap between distinct sample times; NaN under two samples."""
    t = np.unique(np.asarray(times, dtype=float))
    return float(np.median(np.diff(t))) if t.size > 1 else math.nan


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


def _absorbed(kv: KvDemand | None, wave: Wave, limit: float, page: float,
              lookback_s: float) -> bool | None:
    """Whether the reserve absorbed the wave's KV demand; None if used KV did not grow."""
    if kv is None or kv.time.size == 0:
        return None
    used0 = pre_level(kv.time, kv.used, wave.start, lookback_s)
    reserve = pre_level(kv.time, kv.prealloc, wave.start, lookback_s)
    span = (kv.time >= wave.start) & (kv.time < limit)
    if math.isnan(used0) or not span.any():
        return None
    demand = float(kv.used[span].max()) - used0
    if demand < page:
        return None
    return demand <= reserve


def wave_elasticity(
    times: Any,
    values: Any,
    waves: list[Wave],
    page_bytes: float = PAGE_BYTES,
    lookback_s: float = LOOKBACK_S,
    kv: KvDemand | None = None,
) -> list[WaveElasticity]:
    """Time to grow and to release for each wave of one signal (bytes over epoch seconds);
    with `kv`, rounds whose demand the reserve absorbed are told apart."""
    t, v = _sorted(times, values)
    interval = sampling_interval(t)
    out: list[WaveElasticity] = []
    ordered = sorted(waves, key=lambda w: w.start)
    for i, wave in enumerate(ordered):
        limit = ordered[i + 1].start if i + 1 < len(ordered) else math.inf
        level = pre_level(t, v, wave.start, lookback_s)
        span = (t >= wave.start) & (t < limit)
        peak = float(v[span].max()) if span.any() else math.nan
        first_up = release = math.nan
        if not math.isnan(level):
            up = span & (v - level >= page_bytes)
            if up.any():
                first_up = float(t[up][0] - wave.start)
                back = (t >= wave.end) & (t < limit) & (v - level < page_bytes)
                if back.any():
                    release = float(t[back][0] - wave.end)
        absorbed = _absorbed(kv, wave, limit, page_bytes, lookback_s)
        if absorbed:
            out.append(WaveElasticity(wave, level, page_bytes, peak, math.nan, math.nan,
                                      ABSORBED, first_up, interval))
        else:
            outcome = NO_GROWTH if math.isnan(first_up) else GREW
            out.append(WaveElasticity(wave, level, page_bytes, peak, first_up, release,
                                      outcome, math.nan, interval))
    return out


def integral_gib_s(times: Any, values: Any, t0: float | None = None,
                   t1: float | None = None) -> float:
    """Integral of a bytes series over [t0, t1] (clipped to the samples), in GiB x s."""
    return _integral(times, values, t0, t1)[0]


def per_second_gib(times: Any, values: Any, t0: float | None = None,
                   t1: float | None = None) -> tuple[float, float]:
    """(GiB x s per second of the window, the window's seconds) over [t0, t1] clipped to
    the samples: the integral divided by its window, so windows of any length compare."""
    gib_s, seconds = _integral(times, values, t0, t1)
    return (gib_s / seconds if seconds > 0 else math.nan), seconds


def _integral(times: Any, values: Any, t0: float | None, t1: float | None
              ) -> tuple[float, float]:
    t, v = _sorted(times, values)
    if t.size < 2:
        return math.nan, math.nan
    lo = t[0] if t0 is None or math.isnan(t0) else max(float(t0), t[0])
    hi = t[-1] if t1 is None or math.isnan(t1) else min(float(t1), t[-1])
    if hi <= lo:
        return math.nan, math.nan
    inside = (t > lo) & (t < hi)
    tt = np.concatenate([[lo], t[inside], [hi]])
    vv = np.concatenate([[np.interp(lo, t, v)], v[inside], [np.interp(hi, t, v)]])
    return float(np.sum((vv[1:] + vv[:-1]) / 2.0 * np.diff(tt)) / GIB), float(hi - lo)


def kv_efficiency(memory: pd.DataFrame, t0: float, t1: float) -> tuple[float, str]:
    """Mean used/held KV fraction over [t0, t1], and which figure it came from."""
    if memory.empty or math.isnan(t0) or math.isnan(t1):
        return math.nan, ""
    used, held = kv_sum(memory, "kv_used_bytes"), kv_sum(memory, "kv_held_bytes")
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
    if signal == "device":
        df = device_series(memory)
        return df[["time", "value"]] if not df.empty else pd.DataFrame(columns=["time", "value"])
    held = kv_sum(memory, "kv_held_bytes")
    return pd.DataFrame({"time": held.index.to_numpy(float), "value": held.to_numpy(float)})


def _median(xs: list[float]) -> float:
    arr = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    return float(np.median(arr)) if arr.size else math.nan


def point_elasticity(
    memory: pd.DataFrame, requests: pd.DataFrame, meta: dict[str, Any]
) -> dict[str, Any]:
    """One point's elasticity figures, flat: `<signal>_grow_s`, `<signal>_release_s`,
    `<signal>_interval_s` (the sampling interval those times are known within),
    `<signal>_waves_absorbed`, `<signal>_refill_s`, ... and `page_bytes` (the threshold)."""
    waves = waves_of(requests, meta)
    ready = _num(meta.get("ready_time"))
    w0, w1 = _num(meta.get("workload_start")), _num(meta.get("workload_end"))
    page = page_bytes_of(memory, meta)
    kv = kv_demand(memory)
    out: dict[str, Any] = {"waves": len(waves), "page_bytes": page}
    for sig in SIGNALS:
        s = signal_series(memory, sig)
        t, v = s["time"].to_numpy(float), s["value"].to_numpy(float)
        per_wave = wave_elasticity(t, v, waves, page, kv=kv) if len(t) else []
        out[f"{sig}_interval_s"] = sampling_interval(t)
        out[f"{sig}_grow_s"] = _median([w.grow_s for w in per_wave])
        out[f"{sig}_release_s"] = _median([w.release_s for w in per_wave])
        out[f"{sig}_waves_grew"] = sum(w.grew for w in per_wave)
        out[f"{sig}_waves_absorbed"] = sum(w.absorbed for w in per_wave)
        out[f"{sig}_refill_s"] = _median([w.refill_s for w in per_wave])
        out[f"{sig}_waves_released"] = sum(w.released for w in per_wave)
        idle = s[(s["time"] >= ready) & (s["time"] < w0)]["value"] if len(t) else s["value"]
        out[f"{sig}_idle_gib"] = float(idle.median()) / GIB if len(idle) else math.nan
        out[f"{sig}_load_gib_s"] = integral_gib_s(t, v, w0, w1) if len(t) else math.nan
        out[f"{sig}_run_gib_s"] = integral_gib_s(t, v) if len(t) else math.nan
        for window, (a, b) in (("load", (w0, w1)), ("run", (None, None))):
            per_s, secs = per_second_gib(t, v, a, b) if len(t) else (math.nan, math.nan)
            out[f"{sig}_{window}_gib_per_s"], out[f"{sig}_{window}_s"] = per_s, secs
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
