"""A point's headline figures, computed from its request rows and memory samples.

Windows (epoch seconds in point.json): idle = [ready_time, workload_start),
load = [workload_start, workload_end], after = the second half of
[workload_end, end_time]. Memory figures are GiB (2**30 bytes).

Percentiles come with their n (`<metric>_n`: samples; ITL also `itl_requests`); a p99 over
fewer than MIN_P99_N requests is withheld (NaN). Throughput (`output_tok_per_s`,
`ok_req_per_s`) is over the busy span `busy_s`: first send to last completion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from kvexp.results.slo import busy_span_s, slo_figures

GIB = 2**30
DEVICE_SOURCES = ("nvml", "sim_device")
MIN_P99_N = 100  # a p99 over fewer requests than this is withheld


def device_series(memory: pd.DataFrame) -> pd.DataFrame:
    """Device-wide used bytes over time (NVML, or the sim's device)."""
    m = memory[
        memory["source"].isin(DEVICE_SOURCES)
        & (memory["instance"] == "")
        & (memory["metric"] == "device_used_bytes")
    ]
    return m.sort_values("time")


def per_tick(memory: pd.DataFrame, source: str, metric: str, how: str = "sum") -> pd.Series:
    """One source's metric combined over instances (`how`: sum, mean, ...) per sampler
    tick, indexed by time. A sampler stamps every instance of a tick with one time, so
    samples are grouped by their exact time (rounding would merge 100 Hz ticks)."""
    m = memory[(memory["source"] == source) & (memory["metric"] == metric)]
    if m.empty:
        return pd.Series(dtype=float)
    return m.groupby("time")["value"].agg(how).sort_index()


def as_series_frame(s: pd.Series) -> pd.DataFrame:
    """A per-tick Series as the (time, value) frame the window functions take."""
    return pd.DataFrame({"time": s.index.to_numpy(dtype=float), "value": s.to_numpy()})


def kv_held_series(memory: pd.DataFrame) -> pd.DataFrame:
    """kvcached's held bytes (used + prealloc) summed over instances, per sample time."""
    return as_series_frame(per_tick(memory, "kvcached", "kv_held_bytes"))


def _window(df: pd.DataFrame, start: float | None, end: float | None) -> pd.Series:
    if df.empty or start is None or end is None:
        return pd.Series(dtype=float)
    sel = df[(df["time"] >= start) & (df["time"] < end)]
    return sel["value"]


def _gib(x: float | None) -> float:
    return float("nan") if x is None or (isinstance(x, float) and math.isnan(x)) else x / GIB


def _stat(values: pd.Series, how: str) -> float:
    if values.empty:
        return float("nan")
    return float(getattr(values, how)())


def _pct(values: pd.Series | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def memory_figures(memory: pd.DataFrame, meta: dict[str, Any]) -> dict[str, float]:
    ready, w0, w1, end = (meta.get(k) for k in ("ready_time", "workload_start", "workload_end",
                                                "end_time"))
    after0 = None if w1 is None or end is None else w1 + (end - w1) / 2
    out: dict[str, float] = {}
    for prefix, series in (("device", device_series(memory)), ("kv_held", kv_held_series(memory))):
        after_ready = _window(series, ready, float("inf")) if ready else pd.Series(dtype=float)
        out[f"idle_{prefix}_gib"] = _gib(_stat(_window(series, ready, w0), "median"))
        out[f"peak_{prefix}_gib"] = _gib(_stat(after_ready, "max"))
        out[f"mean_{prefix}_gib"] = _gib(_stat(_window(series, w0, w1), "mean"))
        out[f"after_{prefix}_gib"] = _gib(_stat(_window(series, after0, end), "median"))
    return out


def latency_figures(requests: pd.DataFrame, meta: dict[str, Any]) -> dict[str, float]:
    """Latency percentiles with their n, throughput over the busy span, send lag."""
    ok = requests[requests["ok"]] if not requests.empty else requests
    out: dict[str, float] = {
        "requests": int(len(requests)),
        "failed": int((~requests["ok"]).sum()) if not requests.empty else 0,
    }
    for col, name in (("e2e_s", "e2e"), ("ttft_s", "ttft"), ("tpot_s", "tpot")):
        vals = ok[col].dropna() if not ok.empty else pd.Series(dtype=float)
        out[f"{name}_n"] = int(len(vals))
        out.update(_percentiles(name, vals, len(vals)))
    gaps = [np.asarray(v, dtype=float) for v in ok["itl_s"]] if len(ok) else []
    itl = np.concatenate(gaps) if gaps else np.zeros(0)
    out["itl_n"] = int(itl.size)
    out["itl_requests"] = int(sum(g.size > 0 for g in gaps))
    out.update(_percentiles("itl", itl, out["itl_requests"]))
    w0, w1 = meta.get("workload_start"), meta.get("workload_end")
    busy = busy_span_s(requests)
    tokens = float(ok["completion_tokens"].fillna(0).sum()) if len(ok) else 0.0
    out["output_tok_per_s"] = tokens / busy if busy > 0 else float("nan")
    out["ok_req_per_s"] = len(ok) / busy if busy > 0 else float("nan")
    lag = requests["send_lag_s"] if len(requests) else pd.Series(dtype=float)
    out.update(_percentiles("send_lag", lag, len(lag), (99,)))
    out["send_lag_max_s"] = float(lag.max()) if len(lag) else float("nan")
    out["busy_s"] = busy
    out["workload_s"] = (w1 - w0) if w0 is not None and w1 is not None and w1 > w0 \
        else float("nan")
    return out


def _percentiles(name: str, values: pd.Series | np.ndarray, n_requests: int,
                 qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """`<name>_p<q>_s`; p99 is NaN (withheld) over fewer than MIN_P99_N requests."""
    return {f"{name}_p{q}_s": _pct(values, q) if q != 99 or n_requests >= MIN_P99_N
            else float("nan") for q in qs}


def summarize(
    requests: pd.DataFrame, memory: pd.DataFrame, meta: dict[str, Any], choices: dict[str, Any]
) -> dict[str, Any]:
    """One summary row: the point's config choices, status, then its figures."""
    row: dict[str, Any] = dict(choices)
    row["engine"] = str(choices.get("engine") or meta.get("engine") or "")
    row["status"] = meta.get("status", "unknown")
    row["error"] = meta.get("error", "")
    row.update(memory_figures(memory, meta))
    held = meta.get("start_kv_held_bytes")  # shared kvcached servers: held at the point's start
    row["start_kv_held_gib"] = _gib(sum(held.values())) if held else math.nan
    row.update(latency_figures(requests, meta))
    row.update(slo_figures(requests))
    row.update(trace_figures(meta))
    return row


TRACE_COUNTS = ("rows_read", "kept", "clipped_rows", "scaled_rows", "skipped_rows")


def trace_figures(meta: dict[str, Any]) -> dict[str, Any]:
    """`trace_<count>` summed over instances and `trace_<count>.<instance>` (kind=trace)."""
    trace = meta.get("trace") or {}
    out: dict[str, Any] = {}
    if not trace:
        return out
    for key in TRACE_COUNTS:
        out[f"trace_{key}"] = int(sum(int(st.get(key, 0)) for st in trace.values()))
    for name, st in trace.items():
        for key in TRACE_COUNTS:
            out[f"trace_{key}.{name}"] = int(st.get(key, 0))
        out[f"trace_time_scale.{name}"] = float(st.get("time_scale", math.nan))
        out[f"trace_mean_rate_req_s.{name}"] = float(st.get("mean_rate_req_s", math.nan))
    return out
