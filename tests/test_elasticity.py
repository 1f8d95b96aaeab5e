"""Elasticity metrics and bootstrap intervals against series and data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kvexp.report.elasticity import (
    ABSORBED,
    GREW,
    NO_GROWTH,
    PAGE_BYTES,
    KvDemand,
    Wave,
    integral_gib_s,
    kv_efficiency,
    page_bytes_of,
    per_second_gib,
    point_elasticity,
    sampling_interval,
    wave_elasticity,
    waves_of,
)
from kvexp.report.stats import NO_VERDICT, paired_verdict

GIB = 2**30
MIB = 2**20
DT = 0.25  # exact in binary: sample times are exact


def grid(t_end: float = 30.0) -> np.ndarray:
    return np.arange(0.0, t_end + DT / 2, DT)


def step_series(t: np.ndarray, base: float, level: float, up: float, down: float) -> np.ndarray:
    """`base`, then `level` on [up, down), then `base` again."""
    return np.where((t >= up) & (t < down), level, base)


def test_growth_at_exact_time_and_release_after_known_delay() -> None:
    t = grid()
    v = step_series(t, 2 * GIB, 2.5 * GIB, up=10.5, down=15.75)
    (res,) = wave_elasticity(t, v, [Wave(0, 10.0, 14.0)])
    assert res.pre_level == 2 * GIB
    assert res.grow_s == pytest.approx(0.5)
    assert res.release_s == pytest.approx(1.75)
    assert res.peak == 2.5 * GIB


def test_never_released_is_nan() -> None:
    t = grid()
    v = np.where(t >= 10.5, 2.3 * GIB, 2 * GIB)  # kvcached keeping its prealloc reserve
    (res,) = wave_elasticity(t, v, [Wave(0, 10.0, 14.0)])
    assert res.grow_s == pytest.approx(0.5)
    assert math.isnan(res.release_s) and not res.released


def test_flat_static_pool_never_grows() -> None:
    t = grid()
    v = np.full_like(t, 75 * GIB)
    (res,) = wave_elasticity(t, v, [Wave(0, 10.0, 14.0)])
    assert math.isnan(res.grow_s) and math.isnan(res.release_s)


def test_threshold_is_one_page_whatever_the_level() -> None:
    t = grid()
    small = step_series(t, 2 * GIB, 2 * GIB + 2**20, up=11.0, down=13.0)  # 1 MiB < 1 page
    (res,) = wave_elasticity(t, small, [Wave(0, 10.0, 14.0)])
    assert math.isnan(res.grow_s) and res.threshold == PAGE_BYTES and res.outcome == NO_GROWTH
    page = 48 * MIB
    kv = 90 * MIB  # the H200 case: 90 MiB of KV on 11.75 GiB, under 1% of the level
    grown = step_series(t, 11.75 * GIB, 11.75 * GIB + kv, up=11.0, down=13.0)
    (res,) = wave_elasticity(t, grown, [Wave(0, 10.0, 14.0)], page_bytes=page)
    assert res.grow_s == pytest.approx(1.0) and res.release_s == pytest.approx(0.0)
    assert res.outcome == GREW
    under = step_series(t, 75 * GIB, 75 * GIB + page - MIB, up=11.0, down=13.0)
    assert math.isnan(wave_elasticity(t, under, [Wave(0, 10.0, 14.0)], page)[0].grow_s)


def _demand(t: np.ndarray, used: np.ndarray, prealloc: np.ndarray) -> KvDemand:
    return KvDemand(t, used.astype(float), prealloc.astype(float))


def test_demand_the_reserve_absorbed_is_not_a_slow_grow() -> None:
    """Used KV grows 3 pages inside a 5-page reserve at 10.5 s; held only grows at 14.25 s
    when kvcached refills its reserve: absorbed, with the refill time, not a 4.25 s grow."""
    page = 48 * MIB
    t = grid()
    used = step_series(t, page, 4 * page, up=10.5, down=14.0)
    prealloc = np.where(t < 10.5, 5 * page, np.where(t < 14.25, 2 * page, 5 * page))
    prealloc = np.where(t >= 14.0, np.where(t < 14.25, 5 * page, 8 * page), prealloc)
    held = used + prealloc
    (res,) = wave_elasticity(t, held, [Wave(0, 10.0, 14.0)], page, kv=_demand(t, used, prealloc))
    assert res.outcome == ABSORBED and res.absorbed and not res.grew
    assert math.isnan(res.grow_s) and res.refill_s == pytest.approx(4.25)

    over = step_series(t, page, 9 * page, up=10.5, down=14.0)  # 8 pages > the 5 in reserve
    held = over + np.where((t >= 10.5) & (t < 14.0), 0, 5 * page)
    (res,) = wave_elasticity(t, held, [Wave(0, 10.0, 14.0)], page,
                             kv=_demand(t, over, held - over))
    assert res.outcome == GREW and res.grow_s == pytest.approx(0.5)


def test_sampling_interval_is_reported_beside_the_times() -> None:
    t = np.arange(0.0, 30.0, 0.01)
    v = step_series(t, 2 * GIB, 2.5 * GIB, up=10.03, down=15.0)
    (res,) = wave_elasticity(t, v, [Wave(0, 10.0, 14.0)])
    assert res.interval_s == pytest.approx(0.01) and res.grow_s == pytest.approx(0.03, abs=1e-9)
    assert sampling_interval(grid()) == DT and math.isnan(sampling_interval([1.0]))


def test_page_is_inferred_from_the_segment_at_100hz() -> None:
    page = 48 * MIB
    rows = []
    for i, t in enumerate(np.arange(0.0, 2.0, 0.01)):
        for inst in ("a", "b"):  # two instances per tick: summed by exact tick time
            used = page * (1 + (i % 3))
            rows += [(t, "kvcached", inst, "kv_used_bytes", float(used)),
                     (t, "kvcached", inst, "kv_prealloc_bytes", 5.0 * page),
                     (t, "kvcached", inst, "kv_held_bytes", float(used + 5 * page))]
    mem = _mem(rows)
    assert page_bytes_of(mem) == page
    assert page_bytes_of(mem, {"kv_page_bytes": 96 * MIB}) == 96 * MIB
    assert page_bytes_of(_mem([])) == PAGE_BYTES
    assert page_bytes_of(_mem(rows[:1])) == page  # one figure: its own size
    out = point_elasticity(mem, pd.DataFrame(), {"workload_start": 0.5, "workload_end": 1.5})
    assert out["page_bytes"] == page and out["kv_held_interval_s"] == pytest.approx(0.01)
    assert math.isnan(out["device_interval_s"])


def test_release_is_searched_only_until_the_next_wave() -> None:
    t = grid(40.0)
    v = step_series(t, 2 * GIB, 3 * GIB, up=10.5, down=25.0)
    first, second = wave_elasticity(t, v, [Wave(0, 10.0, 14.0), Wave(1, 16.0, 20.0)])
    assert first.grow_s == pytest.approx(0.5)
    assert math.isnan(first.release_s)  # still held when the second wave started
    assert second.pre_level == 3 * GIB  # starts from where the first wave left it
    assert math.isnan(second.grow_s)


def test_integral_of_a_step_function() -> None:
    t = np.concatenate([np.arange(0, 5.5, 0.5), np.arange(5, 10.5, 0.5)])
    v = np.concatenate([np.full(11, 1.0 * GIB), np.full(11, 3.0 * GIB)])  # vertical edge at 5
    assert integral_gib_s(t, v) == pytest.approx(1 * 5 + 3 * 5)
    assert integral_gib_s(t, v, 2.5, 7.5) == pytest.approx(1 * 2.5 + 3 * 2.5)
    assert integral_gib_s(t, v, -5.0, 50.0) == pytest.approx(20.0)  # clipped to the samples
    assert math.isnan(integral_gib_s([1.0], [GIB]))


def test_integrals_per_second_compare_windows_of_different_length() -> None:
    t = np.arange(0, 20.5, 0.5)
    v = np.full(t.size, 2.0 * GIB)  # a flat 2 GiB: 2 GiB·s per second over any window
    assert per_second_gib(t, v, 0.0, 5.0) == pytest.approx((2.0, 5.0))
    assert per_second_gib(t, v, 0.0, 20.0) == pytest.approx((2.0, 20.0))
    assert integral_gib_s(t, v, 0.0, 20.0) == pytest.approx(4 * integral_gib_s(t, v, 0.0, 5.0))
    assert all(math.isnan(x) for x in per_second_gib(t, v, 5.0, 5.0))


def _mem(rows: list[tuple[float, str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["time", "source", "instance", "metric", "value"])


def test_kv_efficiency_kvcached_and_static() -> None:
    rows = []
    for i, t in enumerate([1.0, 2.0, 3.0, 4.0]):
        for inst in ("a", "b"):
            rows.append((t, "kvcached", inst, "kv_held_bytes", 100.0))
            rows.append((t, "kvcached", inst, "kv_used_bytes", 25.0 * (i % 2 + 1)))
    eff, basis = kv_efficiency(_mem(rows), 1.0, 4.0)
    assert basis == "kv_used/kv_held"
    assert eff == pytest.approx((0.25 + 0.5 + 0.25 + 0.5) / 4)
    static = _mem([(t, "engine", "a", "kv_cache_usage", u)
                   for t, u in [(0.0, 0.9), (1.0, 0.2), (2.0, 0.4), (9.0, 0.9)]])
    eff, basis = kv_efficiency(static, 1.0, 2.0)
    assert basis == "engine kv_cache_usage" and eff == pytest.approx(0.3)


def test_waves_from_requests_and_point_elasticity() -> None:
    req = pd.DataFrame({
        "wave": [0, 0, 1, 1],
        "sent_time": [10.0, 10.1, 20.0, 20.2],
        "end_time": [13.0, 14.0, 23.0, np.nan],
    })
    assert waves_of(req) == [Wave(0, 10.0, 14.0), Wave(1, 20.0, 23.0)]
    unindexed = req.assign(wave=-1)
    assert waves_of(unindexed, {"workload_start": 9.0, "workload_end": 30.0}) == [
        Wave(-1, 9.0, 30.0)]

    t = grid()
    v = step_series(t, 2 * GIB, 2.5 * GIB, up=10.5, down=15.75)
    mem = _mem([(x, "nvml", "", "device_used_bytes", y) for x, y in zip(t, v, strict=True)])
    req = pd.DataFrame({"wave": [0], "sent_time": [10.0], "end_time": [14.0]})
    meta = {"ready_time": 2.0, "workload_start": 8.0, "workload_end": 20.0}
    out = point_elasticity(mem, req, meta)
    assert out["device_grow_s"] == pytest.approx(0.5)
    assert out["device_release_s"] == pytest.approx(1.75)
    assert out["device_idle_gib"] == pytest.approx(2.0)
    assert out["device_run_gib_s"] == pytest.approx(2 * 30 + 0.5 * 5.25, abs=0.5 * DT)
    assert math.isnan(out["kv_held_grow_s"])
    assert out["device_interval_s"] == DT and out["device_waves_absorbed"] == 0


def test_two_pairs_give_no_verdict() -> None:
    # at n=2 a percentile bootstrap of medians is [min, max]; a verdict there is refused
    assert paired_verdict([0.0, 1.0], [1.0, 2.0]).status == NO_VERDICT


def test_kvcached_ticks_10ms_apart_are_not_merged() -> None:
    """At 100 Hz two ticks 9.9 ms apart can round to one 10 ms bucket; sums stay per tick."""
    rows = []
    for t, held in ((1.0051, 100.0), (1.0149, 100.0), (1.0251, 100.0)):
        for inst in ("a", "b"):
            rows += [(t, "kvcached", inst, "kv_held_bytes", held),
                     (t, "kvcached", inst, "kv_used_bytes", 25.0)]
    mem = _mem(rows)
    eff, basis = kv_efficiency(mem, 1.0, 2.0)
    assert basis == "kv_used/kv_held" and eff == pytest.approx(0.25)
    out = point_elasticity(mem, pd.DataFrame(), {"workload_start": 1.0, "workload_end": 2.0})
    assert out["kv_held_load_gib_s"] == pytest.approx(200.0 * 0.02 / GIB)


def test_point_elasticity_counts_absorbed_rounds_from_the_segment() -> None:
    page = 48 * MIB
    t = grid()
    used = step_series(t, page, 3 * page, up=10.5, down=14.0)
    prealloc = np.where((t >= 10.5) & (t < 14.0), 3 * page, 5 * page)  # held constant
    rows = []
    for x, u, p in zip(t, used, prealloc, strict=True):
        rows += [(x, "kvcached", "a", "kv_used_bytes", float(u)),
                 (x, "kvcached", "a", "kv_prealloc_bytes", float(p)),
                 (x, "kvcached", "a", "kv_held_bytes", float(u + p))]
    req = pd.DataFrame({"wave": [0], "sent_time": [10.0], "end_time": [14.0]})
    out = point_elasticity(_mem(rows), req, {"workload_start": 9.0, "workload_end": 20.0})
    assert out["kv_held_waves_absorbed"] == 1 and out["kv_held_waves_grew"] == 0
    assert math.isnan(out["kv_held_grow_s"]) and out["kv_held_interval_s"] == DT
    assert out["page_bytes"] == page
