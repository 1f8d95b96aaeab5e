"""Medians with seeded bootstrap confidence intervals, and comparisons that respect the noise.

Repeated runs of one setting give one value per run (e.g. its idle GiB or its E2E p50).
`bootstrap_ci` resamples those per-run values with replacement (numpy, fixed seed) and takes
the percentile interval of the resampled medians. With one run there is no interval.
`compare` calls two settings different only when both have intervals and they do not overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
SEED = 0

WITHIN_NOISE = "within noise"
TOO_FEW = "n too small"


@dataclass(frozen=True)
class CI:
    """A median over `n` per-run values and its bootstrap interval (NaN bounds when n < 2)."""

    value: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and not (math.isnan(self.low) or math.isnan(self.high))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> CI:
    """Median of `values` (NaNs dropped) with a percentile-bootstrap interval at `level`."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0)
    median = float(np.median(arr))
    if n < 2:
        return CI(median, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    samples = rng.choice(arr, size=(n_boot, n), replace=True)
    medians = np.median(samples, axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(medians, [alpha, 1.0 - alpha])
    return CI(median, float(low), float(high), n)


def overlaps(a: CI, b: CI) -> bool:
    """Whether two intervals share any value (both must have one)."""
    return a.low <= b.high and b.low <= a.high


def compare(a: CI, b: CI, name_a: str = "kvcached") -> str:
    """How `a` stands against `b`, in the words the report prints.

    "within noise" when the intervals overlap; "<name_a> lower" / "<name_a> higher" when they
    do not; "n too small (...)" when either side has fewer than two runs (the direction seen
    in those runs follows in brackets; it is not a finding).
    """
    if math.isnan(a.value) or math.isnan(b.value):
        return "no data"
    direction = (
        f"{name_a} lower" if a.value < b.value else f"{name_a} higher" if a.value > b.value
        else "equal"
    )
    if not (a.has_interval and b.has_interval):
        return f"{TOO_FEW} ({direction} in these runs)"
    if overlaps(a, b):
        return WITHIN_NOISE
    return direction


def format_ci(ci: CI, digits: int = 2, scale: float = 1.0) -> str:
    """'1.23 [1.10, 1.40] n=3', or '1.23 (n=1, no CI)', or '-' without data."""
    if ci.n == 0 or math.isnan(ci.value):
        return "-"
    v = f"{ci.value * scale:.{digits}f}"
    if not ci.has_interval:
        return f"{v} (n={ci.n}, no CI)"
    return f"{v} [{ci.low * scale:.{digits}f}, {ci.high * scale:.{digits}f}] n={ci.n}"
