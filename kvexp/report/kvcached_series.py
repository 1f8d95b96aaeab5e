"""kvcached's segment figures as per-tick series: sums over instances, the page step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kvexp.results.summary import per_tick

PAGE_BYTES = 2 * 2**20  # kvcached's default page size; the least step assumed


@dataclass(frozen=True)
class KvDemand:
    """kvcached's used and prealloc bytes summed over instances per tick (epoch seconds)."""

    time: np.ndarray
    used: np.ndarray
    prealloc: np.ndarray


def kv_sum(memory: pd.DataFrame, metric: str) -> pd.Series:
    """A kvcached metric summed over instances per tick."""
    return per_tick(memory, "kvcached", metric)


def kv_demand(memory: pd.DataFrame) -> KvDemand | None:
    """kvcached's used and prealloc per tick, or None without a segment."""
    if memory.empty:
        return None
    both = pd.concat([kv_sum(memory, "kv_used_bytes").rename("used"),
                      kv_sum(memory, "kv_prealloc_bytes").rename("prealloc")], axis=1).dropna()
    if both.empty:
        return None
    return KvDemand(both.index.to_numpy(float), both["used"].to_numpy(float),
                    both["prealloc"].to_numpy(float))


def page_bytes_of(memory: pd.DataFrame, meta: dict[str, Any] | None = None) -> float:
    """One page step: meta `kv_page_bytes`, else the largest step every per-instance
    kv_used/kv_prealloc figure is a multiple of (at least 2 MiB), else 2 MiB."""
    try:
        given = float((meta or {}).get("kv_page_bytes") or math.nan)
    except (TypeError, ValueError):
        given = math.nan
    if not math.isnan(given) and given > 0:
        return given
    if memory.empty:
        return PAGE_BYTES
    m = memory[(memory["source"] == "kvcached")
               & memory["metric"].isin(("kv_used_bytes", "kv_prealloc_bytes"))]
    vals = np.unique(m["value"].to_numpy(float))
    vals = vals[vals > 0].astype(np.int64)
    if vals.size == 0:
        return PAGE_BYTES
    return float(max(PAGE_BYTES, int(np.gcd.reduce(vals))))
