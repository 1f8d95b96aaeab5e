"""Verdict statistics: seeded simulations of false verdicts, coverage and power; wording; tables.

Simulated runs: value = base * ratio (kvcached only) * drift * noise. `drift` is one lognormal
factor per repeat, shared by the kvcached and static run of that repeat (the machine's state
while the interleaved pair ran); `noise` is independent per run with coefficient of variation
`cv` (lognormal, or gamma to check the method off its own assumption).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kvexp.report.stats import (
    HIGHER,
    LOWER,
    MIN_PAIRS,
    NO_DATA,
    NO_DIFFERENCE,
    NO_VERDICT,
    Interval,
    compare_allocators,
    paired_t,
    paired_verdict,
    unpaired_verdict,
    welch_t,
)

DRAWS = 4000
DRIFT_SD = 0.3  # log-sd of the per-repeat factor: ~30% run-to-run swings, as on the H200


def noise(rng: np.random.Generator, shape: tuple[int, ...], cv: float, kind: str) -> np.ndarray:
    """Mean-1 multiplicative noise with coefficient of variation `cv`."""
    if kind == "gamma":
        k = 1.0 / cv**2
        return rng.gamma(k, 1.0 / k, shape)
    s = math.sqrt(math.log1p(cv**2))
    return np.exp(rng.normal(-s * s / 2, s, shape))


def pairs(seed: int, n: int, cv: float, ratio: float = 1.0, kind: str = "lognormal",
          draws: int = DRAWS) -> tuple[np.ndarray, np.ndarray]:
    """`draws` x `n` paired runs (kvcached, static) sharing a per-repeat drift."""
    rng = np.random.default_rng(seed)
    drift = np.exp(rng.normal(0.0, DRIFT_SD, (draws, n)))
    a = 2.0 * ratio * drift * noise(rng, (draws, n), cv, kind)
    b = 2.0 * drift * noise(rng, (draws, n), cv, kind)
    return a, b


def runs(seed: int, n: int, cv: float, ratio: float = 1.0, draws: int = DRAWS) -> np.ndarray:
    """`draws` x `n` independent runs, each with its own drift (no partner)."""
    rng = np.random.default_rng(seed)
    drift = np.exp(rng.normal(0.0, DRIFT_SD, (draws, n)))
    return 2.0 * ratio * drift * noise(rng, (draws, n), cv, "lognormal")


def significant(iv: Interval) -> np.ndarray:
    return (iv.low > 0) | (iv.high < 0)


def covers(iv: Interval, truth: float) -> np.ndarray:
    return (iv.low <= truth) & (truth <= iv.high)


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
@pytest.mark.parametrize("cv", [0.15, 0.30])
@pytest.mark.parametrize("n", [5, 10])
def test_paired_false_verdicts_near_5_percent(n: int, cv: float, kind: str) -> None:
    a, b = pairs(seed=n * 100 + int(cv * 100), n=n, cv=cv, kind=kind)
    for log in (True, False):
        rate = significant(paired_t(a, b, log=log)).mean()
        assert 0.02 <= rate <= 0.08, (n, cv, kind, log, rate)


@pytest.mark.parametrize("cv", [0.15, 0.30])
@pytest.mark.parametrize("n", [5, 10])
def test_paired_interval_covers_a_true_20_percent_difference(n: int, cv: float) -> None:
    a, b = pairs(seed=7 + n, n=n, cv=cv, ratio=0.8)
    coverage = covers(paired_t(a, b, log=True), -0.2).mean()
    assert 0.93 <= coverage <= 0.97, (n, cv, coverage)


def test_power_for_20_percent_at_10_pairs() -> None:
    power = {}
    for cv in (0.15, 0.30):
        a, b = pairs(seed=11, n=10, cv=cv, ratio=0.8)
        iv = paired_t(a, b, log=True)
        power[cv] = (iv.high < 0).mean()
        assert (iv.low > 0).mean() < 0.001  # never the wrong direction
        # the same runs taken unpaired: the shared drift no longer cancels
        assert (welch_t(a, b, log=True).high < 0).mean() < power[cv] / 2
    assert power[0.15] >= 0.75, power
    # at CV 30% per run the t-test (optimal here) detects 20% at n=10 in about a third
    assert 0.25 <= power[0.30] <= 0.45, power
    a, b = pairs(seed=12, n=30, cv=0.30, ratio=0.8)
    assert (paired_t(a, b, log=True).high < 0).mean() >= 0.75  # ~30 pairs for CV 30%


@pytest.mark.parametrize(("na", "nb"), [(5, 5), (10, 10), (5, 8)])
def test_welch_false_verdicts_and_coverage(na: int, nb: int) -> None:
    a, b = runs(seed=na, n=na, cv=0.3), runs(seed=100 + nb, n=nb, cv=0.3)
    for log in (True, False):
        rate = significant(welch_t(a, b, log=log)).mean()
        assert 0.02 <= rate <= 0.08, (na, nb, log, rate)
    a = runs(seed=200 + na, n=na, cv=0.15, ratio=0.8)
    coverage = covers(welch_t(a, b, log=True), -0.2).mean()
    assert 0.93 <= coverage <= 0.97, (na, nb, coverage)


def test_intervals_match_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 0.3, 7), rng.lognormal(0.1, 0.3, 7)
    iv = paired_t(a, b, log=True)
    ref = sps.ttest_rel(np.log(a), np.log(b)).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((math.expm1(ref.low), math.expm1(ref.high)))
    iv = welch_t(a[:5], b, log=False)
    ref = sps.ttest_ind(a[:5], b, equal_var=False).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))


def test_vectorized_decision_matches_verdicts() -> None:
    a, b = pairs(seed=5, n=MIN_PAIRS, cv=0.2, ratio=0.85, draws=300)
    vec = paired_t(a, b, log=True)
    got = [paired_verdict(x, y).status for x, y in zip(a, b, strict=True)]
    want = np.where(vec.high < 0, LOWER, np.where(vec.low > 0, HIGHER, NO_DIFFERENCE))
    assert got == list(want) and LOWER in got and NO_DIFFERENCE in got


def test_no_verdict_below_min_pairs() -> None:
    a, b = [0.80, 0.82, 0.79, 0.81, 0.80], [1.0, 1.01, 0.99, 1.0, 1.02]
    few = paired_verdict(a[: MIN_PAIRS - 1], b[: MIN_PAIRS - 1])
    assert few.status == NO_VERDICT and not few.has_verdict
    assert few.text == f"no verdict: {MIN_PAIRS - 1} pairs, a verdict needs {MIN_PAIRS}"
    assert few.estimate < 0 and few.low < few.high < 0  # the figures are still there
    assert paired_verdict(a, b).status == LOWER
    assert paired_verdict([1.0, np.nan] * 3, [1.1] * 6).status == NO_VERDICT  # NaN pairs drop
    un = unpaired_verdict(a, b[:4])
    assert un.status == NO_VERDICT and "5 kvcached and 4 static runs unpaired" in un.text
    assert paired_verdict([], []).status == NO_DATA


def test_verdict_wording() -> None:
    a, b = np.array([0.80, 0.82, 0.78, 0.81, 0.79]), np.array([1.0, 1.02, 0.98, 1.01, 0.99])
    v = paired_verdict(a, b)
    assert v.method == "paired t" and v.scale == "log" and v.n == 5
    m = re.fullmatch(r"kvcached lower by ([\d.]+)% \(95% CI ([\d.]+)%\.\.([\d.]+)%\)", v.text)
    assert m, v.text
    assert [float(x) for x in m.groups()] == pytest.approx(
        [-v.estimate * 100, -v.high * 100, -v.low * 100], abs=0.05)
    up = paired_verdict(b, a)
    assert up.status == HIGHER and up.text.startswith("kvcached higher by 25.0%")
    flat = paired_verdict([1.0, 1.2, 0.9, 1.1, 1.0], [1.1, 1.0, 1.0, 1.0, 1.05])
    assert flat.status == NO_DIFFERENCE
    assert re.fullmatch(r"no difference detectable at n=5, interval \[-[\d.]+%, \+[\d.]+%\]",
                        flat.text), flat.text
    raw = paired_verdict([-1.0, 0.0, 1.0, 2.0, 3.0], [1.0] * 5, unit="GiB", digits=1)
    assert raw.scale == "raw" and raw.text.endswith("GiB]")  # a value <= 0: raw differences
    mem = paired_verdict([2.1] * 5, [75.5] * 5, log=False, unit="GiB", digits=1)
    assert mem.text == "kvcached lower by 73.4 GiB (95% CI 73.4..73.4 GiB)"  # no spread


def frame(setting: str, kv: dict[int, float], st: dict[int, float]) -> pd.DataFrame:
    rows = [(setting, r, "kvcached", v) for r, v in kv.items()]
    rows += [(setting, r, "static", v) for r, v in st.items()]
    return pd.DataFrame(rows, columns=["setting", "repeat", "allocator", "e2e_p50_s"])


def test_compare_allocators_pairs_and_falls_back() -> None:
    drift = [1.0, 2.0, 0.5, 1.5, 0.7, 1.2, 0.9, 1.1]  # big per-repeat swings, shared
    kv = {r: 0.9 * d * (1 + 0.01 * (r % 3)) for r, d in enumerate(drift)}
    st = {r: d * (1 + 0.01 * ((r + 1) % 3)) for r, d in enumerate(drift)}
    df = pd.concat([
        frame("paired", kv, st),
        frame("short", {r: kv[r] for r in range(3)}, {r: st[r] for r in range(3)}),
        frame("failed", {r: kv[r] for r in range(5)}, {**{r: st[r] for r in range(4)},
                                                       4: np.nan}),
        frame("shifted", {r: kv[r] for r in range(6)}, {r: st[r] for r in (0, 1, 2, 3, 6, 7)}),
        frame("dupes", kv, st),
    ])
    df = pd.concat([df, frame("dupes", {}, {0: st[0] * 1.1})])  # two static runs of repeat 0
    rows = {r["setting"]: r for r in compare_allocators(df, "e2e_p50_s", by=["setting"])}
    p = rows["paired"]
    assert p["method"] == "paired t" and p["status"] == LOWER and p["n"] == 8
    assert p["estimate"] == pytest.approx(-0.1, abs=0.01) and p["unpaired_left_out"] == 0
    assert rows["short"]["status"] == NO_VERDICT and rows["short"]["method"] == "paired t"
    assert rows["short"]["text"] == f"no verdict: 3 pairs, a verdict needs {MIN_PAIRS}"
    f = rows["failed"]
    assert f["method"] == "Welch t" and f["status"] == NO_VERDICT and (f["n_a"], f["n_b"]) == (5, 4)
    s = rows["shifted"]  # 4 pairs, 6 runs each: Welch, and the drift hides the 10%
    assert s["method"] == "Welch t" and s["status"] == NO_DIFFERENCE and s["n"] == 6
    d = rows["dupes"]
    assert d["method"] == "paired t" and d["n"] == 7 and d["unpaired_left_out"] == 3
    assert d["metric"] == "e2e_p50_s" and d["status"] == LOWER
