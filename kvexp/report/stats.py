"""kvcached-vs-static verdicts: paired t-intervals, a Welch fallback, and no verdict below 5 pairs.

Repeats run interleaved (A B A B), so the kvcached and static run of one repeat and setting
share the machine's drift. `paired_t` takes the per-pair differences of log values (the
relative effect: an interval for kvcached/static - 1) or of raw values (when a value is <= 0)
and gives the Student t-interval of their mean. `welch_t` is the fallback for runs without a
partner (unequal repeats, a failed run): the Welch t-interval for the difference of the arms'
means, on the same scales. A verdict needs `MIN_PAIRS` pairs (or as many runs per arm when
unpaired); below that the figures come back with the status "no verdict".

Why these methods (seeded simulation, 2000-4000 draws per cell, lognormal and gamma noise,
CV 15-30% per run, a per-repeat drift factor shared by both arms; false verdict = interval
excludes 0 when there is no difference):
- paired t on log differences: 4.2-5.3% false verdicts at n=5 and n=10 (4.2-5.8% at n=3);
  on raw differences 3.7-5.0%; 94.6-95.5% coverage of a true -20%. Exact for lognormal
  noise, close for gamma.
- percentile and BCa bootstrap (scipy.stats.bootstrap) of the mean log difference: 16-18%
  at n=5 and 9-10% at n=10: too narrow at these n, so not used. (The former percentile
  bootstrap of medians is [min, max] at n=2-3: 29% / 11% false verdicts there.)
- Welch on independent runs (5v5, 10v10, 5v8): 4.1-4.6% on logs, 3.4-4.1% raw; coverage
  94.7-95.5%. Welch on paired data with drift: 0-1.6%, with a fraction of the paired test's
  power (7% vs 44% for a 20% effect at n=5, CV 15%), hence pairs first, Welch as fallback.
Power of the paired test for a true 20% difference at n=10: 85% at CV 15% (83% gamma), ~60%
at CV 20%, 33% at CV 30% (30% gamma); CV of each run's own noise, the shared drift cancels.
At CV 30%, 80% power needs ~30 pairs (81% measured). tests/test_stats.py re-measures these.

The report's comparison table and headline (`verdicts.py`) use `compare_allocators`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

MIN_PAIRS = 5  # fewer pairs (or runs per arm, unpaired) than this: no verdict
LEVEL = 0.95

LOWER, HIGHER, NO_DIFFERENCE, NO_VERDICT, NO_DATA = (
    "lower", "higher", "no difference", "no verdict", "no data")


@dataclass(frozen=True)
class Interval:
    """Effect estimates and t-intervals (arrays over leading axes; floats for 1-D input).

    On the log scale the effect is a/b - 1 (geometric means), on the raw scale a - b.
    """

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    df: np.ndarray


def _t_interval(mean: np.ndarray, se: np.ndarray, df: np.ndarray, level: float,
                log: bool) -> Interval:
    with np.errstate(invalid="ignore", divide="ignore"):
        q = sps.t.ppf(0.5 + level / 2, df)
        half = np.where(se == 0, 0.0, q * se)
    low, high = mean - half, mean + half
    if log:
        mean, low, high = np.expm1(mean), np.expm1(low), np.expm1(high)
    return Interval(mean, low, high, df)


def _scale(x: np.ndarray, log: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(x) if log else x


def paired_t(a: np.ndarray, b: np.ndarray, level: float = LEVEL, log: bool = True) -> Interval:
    """t-interval of the mean pair difference along the last axis (pairs a[..., i], b[..., i])."""
    d = _scale(np.asarray(a, float), log) - _scale(np.asarray(b, float), log)
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    se = d.std(axis=-1, ddof=1) / math.sqrt(n) if n > 1 else np.full_like(mean, np.nan)
    return _t_interval(mean, se, np.full_like(mean, n - 1.0), level, log)


def welch_t(a: np.ndarray, b: np.ndarray, level: float = LEVEL, log: bool = True) -> Interval:
    """Welch t-interval for mean(a) - mean(b) along the last axis; arms may differ in size."""
    x, y = _scale(np.asarray(a, float), log), _scale(np.asarray(b, float), log)
    nx, ny = x.shape[-1], y.shape[-1]
    if nx < 2 or ny < 2:
        mean = x.mean(axis=-1) - y.mean(axis=-1)
        nan = np.full_like(mean, np.nan)
        return Interval(np.expm1(mean) if log else mean, nan, nan, nan)
    vx, vy = x.var(axis=-1, ddof=1) / nx, y.var(axis=-1, ddof=1) / ny
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (vx + vy) ** 2 / (vx**2 / (nx - 1) + vy**2 / (ny - 1))
    return _t_interval(x.mean(axis=-1) - y.mean(axis=-1), np.sqrt(vx + vy), df, level, log)


@dataclass(frozen=True)
class Verdict:
    """One comparison of arm a against arm b, with the words a table or headline prints."""

    estimate: float  # a/b - 1 when scale == "log", a - b when "raw"
    low: float
    high: float
    n: int  # pairs (paired) or runs of the smaller arm (unpaired)
    n_a: int
    n_b: int
    method: str  # "paired t", "Welch t" or "-"
    scale: str  # "log" (relative) or "raw" (difference)
    status: str  # LOWER, HIGHER, NO_DIFFERENCE, NO_VERDICT or NO_DATA
    text: str

    @property
    def has_verdict(self) -> bool:
        return self.status in (LOWER, HIGHER, NO_DIFFERENCE)

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def _fmt(x: float, log: bool, unit: str, digits: int, sign: bool = False) -> str:
    if log:
        v = abs(x * 100) if not sign else x * 100
        s = f"{v:+.1f}" if sign else f"{v:.1f}"
        return s + "%"
    s = f"{x:+.{digits}f}" if sign else f"{abs(x):.{digits}f}"
    return s + (f" {unit}" if unit else "")


def _verdict(iv: Interval, n: int, n_a: int, n_b: int, method: str, log: bool, enough: bool,
             name: str, unit: str, digits: int, few: str, level: float) -> Verdict:
    est, low, high = (float(np.asarray(v)) for v in (iv.estimate, iv.low, iv.high))
    scale = "log" if log else "raw"
    if math.isnan(est):
        return Verdict(est, low, high, n, n_a, n_b, method, scale, NO_DATA, NO_DATA)
    span = f"[{_fmt(low, log, '', digits, True)}, {_fmt(high, log, unit, digits, True)}]"
    if not enough:
        status, text = NO_VERDICT, f"{NO_VERDICT}: {few}, a verdict needs {MIN_PAIRS}"
    elif low > 0 or high < 0:
        status = HIGHER if low > 0 else LOWER
        near, far = (low, high) if low > 0 else (-high, -low)
        text = (f"{name} {status} by {_fmt(est, log, unit, digits)} ({level:.0%} CI "
                f"{_fmt(near, log, '', digits)}..{_fmt(far, log, unit, digits)})")
    else:
        status, text = NO_DIFFERENCE, f"no difference detectable at n={n}, interval {span}"
    return Verdict(est, low, high, n, n_a, n_b, method, scale, status, text)


def _auto_log(log: bool | None, *arrays: np.ndarray) -> bool:
    if log is not None:
        return log
    vals = np.concatenate([x[np.isfinite(x)] for x in arrays])
    return bool(vals.size) and bool((vals > 0).all())


def paired_verdict(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                   log: bool | None = None, level: float = LEVEL, name: str = "kvcached",
                   name_b: str = "static", unit: str = "", digits: int = 2) -> Verdict:
    """Verdict from aligned pairs (a[i], b[i]); pairs with a NaN drop out.

    `log=None` takes the log scale when every value is > 0, else raw differences.
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    use_log = _auto_log(log, x, y)
    n = int(x.size)
    iv = paired_t(x, y, level, use_log) if n else Interval(*(np.nan,) * 4)
    return _verdict(iv, n, n, n, "paired t", use_log, n >= MIN_PAIRS, name, unit, digits,
                    f"{n} pairs", level)


def unpaired_verdict(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                     log: bool | None = None, level: float = LEVEL, name: str = "kvcached",
                     name_b: str = "static", unit: str = "", digits: int = 2) -> Verdict:
    """Verdict from two independent samples (Welch); a verdict needs MIN_PAIRS runs per arm."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    use_log = _auto_log(log, x, y)
    na, nb = int(x.size), int(y.size)
    iv = welch_t(x, y, level, use_log) if na and nb else Interval(*(np.nan,) * 4)
    return _verdict(iv, min(na, nb), na, nb, "Welch t", use_log, min(na, nb) >= MIN_PAIRS,
                    name, unit, digits, f"{na} {name} and {nb} {name_b} runs unpaired", level)


def compare_allocators(df: pd.DataFrame, metric: str, by: Sequence[str] = ("setting",),
                       pair_on: str = "repeat", arm_col: str = "allocator",
                       a: str = "kvcached", b: str = "static", **kw: object) -> list[dict]:
    """Per group of `by`: a vs b on `metric`, paired on `pair_on`, one verdict row each.

    Pairs are the `pair_on` values with exactly one finite run in each arm. Paired when there
    are MIN_PAIRS of them or every run has its partner (runs without one are left out);
    otherwise Welch over all finite runs. Extra keywords go to the verdict functions.
    """
    rows = []
    cols = list(by)
    groups = df.groupby(cols, sort=False, dropna=False) if cols else [((), df)]
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = grp[np.isfinite(pd.to_numeric(grp[metric], errors="coerce"))]
        va = g[g[arm_col] == a].groupby(pair_on)[metric].agg(["count", "first"])
        vb = g[g[arm_col] == b].groupby(pair_on)[metric].agg(["count", "first"])
        both = pd.concat([va.loc[va["count"] == 1, "first"].rename("a"),
                          vb.loc[vb["count"] == 1, "first"].rename("b")], axis=1, join="inner")
        runs_a, runs_b = int(va["count"].sum()), int(vb["count"].sum())
        left_out = runs_a + runs_b - 2 * len(both)
        if len(both) >= MIN_PAIRS or (len(both) and left_out == 0):
            v = paired_verdict(both["a"], both["b"], name=a, name_b=b, **kw)
        else:
            v = unpaired_verdict(g[g[arm_col] == a][metric].astype(float),
                                 g[g[arm_col] == b][metric].astype(float), name=a, name_b=b,
                                 **kw)
            left_out = 0
        rows.append({**dict(zip(cols, key, strict=True)), "metric": metric, **v.as_row(),
                     "unpaired_left_out": left_out})
    return rows
