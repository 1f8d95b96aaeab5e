"""SLOs per request and goodput, as vLLM's `--goodput` defines them.

A request is good (`slo_ok`) when it succeeded and each limit given is met: TTFT <= ttft_ms,
TPOT <= tpot_ms (a one-token reply has TPOT 0), every inter-token gap <= itl_ms, E2E <=
e2e_s. `slo_attainment` = good / requests; `goodput_req_per_s` = good / workload seconds.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

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


def slo_figures(requests: pd.DataFrame, meta: dict[str, Any]) -> dict[str, float]:
    """`slo_attainment` and `goodput_req_per_s` for the point and `.<instance>` for each."""
    w0, w1 = meta.get("workload_start"), meta.get("workload_end")
    span = (w1 - w0) if w0 is not None and w1 is not None and w1 > w0 else math.nan
    if requests.empty or "slo_ok" not in requests:
        return {"slo_attainment": math.nan, "goodput_req_per_s": math.nan}

    def figures(df: pd.DataFrame, suffix: str) -> dict[str, float]:
        good = int(df["slo_ok"].fillna(False).astype(bool).sum())
        return {f"slo_attainment{suffix}": good / len(df) if len(df) else math.nan,
                f"goodput_req_per_s{suffix}": good / span if span == span else math.nan}

    out = figures(requests, "")
    for name, df in requests.groupby("instance", sort=True):
        out.update(figures(df, f".{name}"))
    return out
