"""SLOs per request and goodput, as vLLM's `--goodput` defines them.

A request is good (`slo_ok`) when it succeeded and each limit given is met: TTFT <= ttft_ms,
TPOT <= tpot_ms (a one-token reply has TPOT 0), every inter-token gap <= itl_ms, E2E <=
e2e_s. `slo_attainment` = good / requests; `goodput_req_per_s` = good / busy seconds (first
send to last completion, `busy_span_s`; vLLM divides by its benchmark's duration).
Its interval: the Wilson score interval of the share good / requests (scipy).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy.stats import binomtest

from kvexp.results.records import RequestRow


def meets_slo(row: RequestRow, slo: Any | None) -> bool:
    """Whether one request meets every limit of `slo` (a SloConfig; None = no limits)."""
    if not row.ok:
        return False
    if slo is None:
        return True
    checks = ((slo.ttft_ms, None if row.ttft_s is None else row.ttft_s * 1e3),
              (slo.tpot_ms, (row.tpot_s or 0.0) * 1e3),
              (slo.itl_ms, max(row.itl_s, default=0.0) * 1e3),
              (slo.e2e_s, row.e2e_s))
    return all(limit is None or (value is not None and value <= limit)
               for limit, value in checks)


def busy_span_s(requests: pd.DataFrame) -> float:
    """Seconds from the first send to the last completion of these requests (NaN if none)."""
    if requests.empty:
        return math.nan
    missing = [c for c in ("sent_time", "end_time") if c not in requests]
    if missing:
        raise KeyError(f"requests have no column {', '.join(missing)}")
    end = requests["end_time"].fillna(requests["sent_time"])
    return float(end.max() - requests["sent_time"].min())


def wilson_interval(good: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the share good / n; (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= good <= n:
        raise ValueError(f"good requests ({good}) must lie in [0, n = {n}]")
    ci = binomtest(good, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def slo_counts(requests: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Requests (`n`) and those meeting the SLO (`good`) per group of `by` columns, with
    `slo_attainment` and its 95% Wilson interval (`slo_low`, `slo_high`)."""
    missing = [c for c in [*by, "slo_ok"] if c not in requests]
    if missing:
        raise KeyError(f"requests have no column {', '.join(missing)}")
    good = requests["slo_ok"].fillna(False).astype(bool)
    g = good.groupby([requests[c] for c in by], sort=True)
    out = pd.DataFrame({"good": g.sum().astype(int), "n": g.size()}).reset_index()
    out["slo_attainment"] = out["good"] / out["n"]
    bounds = [wilson_interval(int(k), int(n)) for k, n in zip(out["good"], out["n"], strict=True)]
    out["slo_low"] = [b[0] for b in bounds]
    out["slo_high"] = [b[1] for b in bounds]
    return out


def slo_figures(requests: pd.DataFrame) -> dict[str, float]:
    """`slo_attainment` (with `_low`/`_high`, its 95% Wilson interval) and
    `goodput_req_per_s` for the point, and `.<instance>` for each instance."""
    if requests.empty or "slo_ok" not in requests:
        return {"slo_attainment": math.nan, "goodput_req_per_s": math.nan}

    def figures(good: int, n: int, suffix: str, span: float) -> dict[str, float]:
        low, high = wilson_interval(good, n)
        return {f"slo_attainment{suffix}": good / n if n else math.nan,
                f"slo_attainment_low{suffix}": low, f"slo_attainment_high{suffix}": high,
                f"goodput_req_per_s{suffix}": good / span if span > 0 else math.nan}

    whole = slo_counts(requests.assign(_all=""), ["_all"]).iloc[0]
    out = figures(int(whole["good"]), int(whole["n"]), "", busy_span_s(requests))
    for _, r in slo_counts(requests, ["instance"]).iterrows():
        own = requests[requests["instance"] == r["instance"]]
        out.update(figures(int(r["good"]), int(r["n"]), f".{r['instance']}", busy_span_s(own)))
    return out
