"""A point's SLO attainment (share of its requests with `slo_ok`) and its Wilson interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from scipy.stats import binomtest


@dataclass(frozen=True)
class Attainment:
    good: int
    requests: int
    low: float
    high: float

    @property
    def share(self) -> float:
        return self.good / self.requests if self.requests else math.nan

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "attainment": self.share}


def attainment(good: int, requests: int, confidence: float) -> Attainment:
    """Attainment with its Wilson interval at `confidence` (nan bounds for no requests)."""
    if requests == 0:
        return Attainment(0, 0, math.nan, math.nan)
    ci = binomtest(good, requests).proportion_ci(confidence, method="wilson")
    return Attainment(good, requests, float(ci.low), float(ci.high))


def read_requests(point_dirs: list[Path], columns: tuple[str, ...] = ("slo_ok",)
                  ) -> pd.DataFrame:
    """The request rows of some point folders (points without rows give none)."""
    frames = [pd.read_parquet(d / "requests.parquet", columns=list(columns))
              for d in point_dirs if (d / "requests.parquet").is_file()]
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)


def of_points(point_dirs: list[Path], confidence: float) -> Attainment:
    """Attainment over every request of the given points (repeats pooled)."""
    rows = read_requests(point_dirs)
    return attainment(int(rows["slo_ok"].fillna(False).astype(bool).sum()), len(rows),
                      confidence)


def send_lag_p99_ms(point_dirs: list[Path]) -> float:
    """p99 of the requests' send lag (sent - scheduled), ms; 0 without requests."""
    lag = read_requests(point_dirs, ("send_lag_s",))["send_lag_s"].dropna()
    return float(lag.quantile(0.99) * 1000) if len(lag) else 0.0
