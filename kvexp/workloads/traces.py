"""Trace replay plans: a trace file and TraceOptions in, timed requests and their stats out.

Pure (no server): `plan_trace` reads a trace (see traces_load), keeps one model's rows if
asked, cuts a time window, fits lengths to `max_model_len`, caps the request count and
rescales time. Order: model filter -> window [start_s, start_s + duration_s) in trace
seconds after the first arrival -> length policy -> first max_requests kept -> time scale.

Length policy (a row fits when input + output <= max_model_len):
- clip: output = min(output, max_model_len - 1), then input = min(input, max_model_len -
  output); the prompt keeps its head, so shared hash_ids prefixes survive.
- scale: both lengths times max_model_len / (input + output), rounded down, at least 1.
- skip: the row is dropped.

Mean rate is 1 / mean inter-arrival gap: (n - 1) / span_s. `target_rate` picks the time
scale that makes the replayed mean rate equal it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kvexp.workloads.traces_load import TraceColumns, TraceError, read_trace

LENGTH_POLICIES = ("clip", "scale", "skip")


@dataclass
class TraceOptions:
    """How to replay a trace; the workload config mirrors these fields."""

    start_s: float = 0.0  # window start, trace seconds after the trace's first arrival
    duration_s: float | None = None  # window length in trace seconds; None = to the end
    max_requests: int | None = None  # keep at most this many requests (after the policy)
    time_scale: float = 1.0  # compress time: 10 replays 10x faster
    target_rate: float | None = None  # req/s: scale time so the mean rate is this
    max_model_len: int | None = None  # fit input + output into this; None = no fitting
    length_policy: str = "clip"  # clip | scale | skip
    model: str | None = None  # keep only rows whose model column equals this

    def problems(self) -> list[str]:
        """Every problem with these options, as readable messages; [] if valid."""
        e = []
        if self.start_s < 0:
            e.append(f"start_s must be >= 0, got {self.start_s}")
        if self.duration_s is not None and self.duration_s <= 0:
            e.append(f"duration_s must be > 0, got {self.duration_s}")
        if self.max_requests is not None and self.max_requests < 1:
            e.append(f"max_requests must be >= 1, got {self.max_requests}")
        if self.time_scale <= 0:
            e.append(f"time_scale must be > 0, got {self.time_scale}")
        if self.target_rate is not None:
            if self.target_rate <= 0:
                e.append(f"target_rate must be > 0, got {self.target_rate}")
            if self.time_scale != 1.0:
                e.append("give time_scale or target_rate, not both "
                         f"(time_scale={self.time_scale}, target_rate={self.target_rate})")
        if self.max_model_len is not None and self.max_model_len < 2:
            e.append(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.length_policy not in LENGTH_POLICIES:
            e.append(f"length_policy {self.length_policy!r} is unknown; expected one of "
                     f"{', '.join(LENGTH_POLICIES)}")
        return e


@dataclass(frozen=True)
class TraceRequest:
    """One request to replay; `row` is its 1-based data row in the trace file."""

    row: int
    at_s: float  # send offset, replay seconds after the window start
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] | None = None
    model: str | None = None


@dataclass(frozen=True)
class TraceStats:
    """What the plan did to the trace; the counts go into the results."""

    source: str
    rows_read: int  # rows in the file
    rows_in_window: int  # rows past the model filter and inside the time window
    kept: int  # requests in the plan
    clipped_rows: int  # kept rows whose lengths the clip policy cut
    scaled_rows: int  # kept rows whose lengths the scale policy shrank
    skipped_rows: int  # rows the skip policy dropped (before the max_requests cap)
    time_scale: float  # trace seconds per replay second
    span_s: float  # replay seconds from the first to the last kept request
    mean_rate_req_s: float  # (kept - 1) / span_s; 0.0 if span_s is 0


@dataclass(frozen=True)
class TracePlan:
    """The requests to send, sorted by at_s, and what the plan did."""

    requests: list[TraceRequest]
    stats: TraceStats
    options: TraceOptions = field(default_factory=TraceOptions)


def plan_trace(path: str | Path, options: TraceOptions | None = None, fmt: str = "auto",
               columns: TraceColumns | None = None, origin_s: float | None = None
               ) -> TracePlan:
    """Read a trace file and plan its replay (see the module docstring for the steps).

    `origin_s` (arrival_s units of read_trace) is the trace time that start_s counts from;
    None = the trace's first arrival. Give several traces of one period the same origin
    (e.g. the earliest first arrival) to replay them on one clock.
    """
    table = read_trace(path, fmt, columns)
    return plan_table(table, options or TraceOptions(), source=str(path), origin_s=origin_s)


def plan_table(table: pd.DataFrame, options: TraceOptions, source: str = "",
               origin_s: float | None = None) -> TracePlan:
    """Plan the replay of a table from read_trace (origin_s as in plan_trace)."""
    o = options
    errs = o.problems()
    if errs:
        raise TraceError(f"{source}: invalid trace options: " + "; ".join(errs))
    t = table
    if o.model is not None:
        if t["model"].isna().all():
            raise TraceError(f"{source}: model={o.model!r} asked, but the trace has no "
                             "model column (name it in the trace columns)")
        t = t[t["model"] == o.model]
    first = float(table["arrival_s"].iloc[0]) if len(table) else 0.0
    t0 = (first if origin_s is None else origin_s) + o.start_s
    if not t.empty:
        rel = t["arrival_s"].to_numpy() - t0
        inside = rel >= 0
        if o.duration_s is not None:
            inside &= rel < o.duration_s
        t = t[inside]
    rows_in_window = len(t)
    inp = t["input_tokens"].to_numpy(dtype=np.int64)
    out = t["output_tokens"].to_numpy(dtype=np.int64)
    keep = np.ones(len(t), dtype=bool)
    changed = np.zeros(len(t), dtype=bool)
    if o.max_model_len is not None:
        inp, out, keep, changed = fit_lengths(inp, out, o.max_model_len, o.length_policy)
    kept_idx = np.flatnonzero(keep)
    examined = len(t)
    if o.max_requests is not None and len(kept_idx) > o.max_requests:
        kept_idx = kept_idx[: o.max_requests]
        examined = int(kept_idx[-1]) + 1
    skipped = int((~keep[:examined]).sum())
    n_changed = int(changed[kept_idx].sum())
    if not len(kept_idx):
        raise TraceError(f"{source}: no request left to replay (rows in window: "
                         f"{rows_in_window}, skipped by length: {skipped})")
    rel = t["arrival_s"].to_numpy()[kept_idx] - t0
    scale = o.time_scale
    if o.target_rate is not None:
        native = _mean_rate(rel)
        if native <= 0:
            raise TraceError(f"{source}: target_rate needs two requests at different times "
                             f"in the window (got {len(kept_idx)})")
        scale = o.target_rate / native
    at = rel / scale
    sub = t.iloc[kept_idx]
    reqs = [
        TraceRequest(row=int(r), at_s=float(a), input_tokens=int(i), output_tokens=int(n),
                     hash_ids=h, model=m)
        for r, a, i, n, h, m in zip(sub["row"], at, inp[kept_idx], out[kept_idx],
                                    sub["hash_ids"], sub["model"], strict=True)
    ]
    span = float(at[-1] - at[0])
    stats = TraceStats(
        source=source, rows_read=len(table), rows_in_window=rows_in_window,
        kept=len(reqs),
        clipped_rows=n_changed if o.length_policy == "clip" else 0,
        scaled_rows=n_changed if o.length_policy == "scale" else 0,
        skipped_rows=skipped, time_scale=float(scale), span_s=span,
        mean_rate_req_s=_mean_rate(at),
    )
    return TracePlan(reqs, stats, o)


def fit_lengths(inp: np.ndarray, out: np.ndarray, max_model_len: int, policy: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(input, output, keep, changed) after fitting input + output into max_model_len."""
    over = inp + out > max_model_len
    keep = np.ones(len(inp), dtype=bool)
    inp, out = inp.copy(), out.copy()
    if policy == "skip":
        keep = ~over
        return inp, out, keep, np.zeros(len(inp), dtype=bool)
    if policy == "clip":
        out = np.minimum(out, max_model_len - 1)
        inp = np.minimum(inp, max_model_len - out)
    elif policy == "scale":
        total = (inp + out).astype(float)
        f = np.where(over, max_model_len / total, 1.0)
        new_out = np.maximum(np.floor(out * f).astype(np.int64), 1)
        new_inp = np.maximum(np.floor(inp * f).astype(np.int64), 1)
        new_inp = np.minimum(new_inp, max_model_len - new_out)
        inp, out = np.where(over, new_inp, inp), np.where(over, new_out, out)
    else:
        raise ValueError(f"length policy {policy!r} is unknown; expected {LENGTH_POLICIES}")
    return inp, out, keep, over


def split_by_model(plan: TracePlan) -> dict[str, list[TraceRequest]]:
    """The plan's requests per model (one trace -> per-instance traces on one clock)."""
    if any(r.model is None for r in plan.requests):
        raise TraceError(f"{plan.stats.source}: cannot split by model: the trace has no "
                         "model column (name it in the trace columns)")
    split: dict[str, list[TraceRequest]] = {}
    for r in plan.requests:
        split.setdefault(str(r.model), []).append(r)
    return split


def _mean_rate(at: np.ndarray) -> float:
    span = float(at[-1] - at[0]) if len(at) else 0.0
    return (len(at) - 1) / span if span > 0 else 0.0
