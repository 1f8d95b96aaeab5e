"""Arrival schedules: counts, ordering, rates, phases, seeding, prompts, validation."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from kvexp.config import TUTORIAL_PROMPTS, WorkloadConfig
from kvexp.workloads.schedules import build_schedule, chains_waves, check_workload

AB = ["a", "b"]


def wl(kind: str, **kw: object) -> WorkloadConfig:
    return WorkloadConfig(kind=kind, **kw)  # type: ignore[arg-type]


def times(specs, inst):
    return np.array([s.at_s for s in specs if s.instance == inst])


def test_ids_sorted_and_fields_from_config() -> None:
    w = wl("poisson", rate=3.0, duration_s=10.0, max_tokens=42, temperature=0.1, ignore_eos=True)
    specs = build_schedule(w, AB)
    assert [s.request_id for s in specs] == list(range(len(specs)))
    assert [s.at_s for s in specs] == sorted(s.at_s for s in specs)
    assert all(s.max_tokens == 42 and s.temperature == 0.1 and s.ignore_eos for s in specs)
    assert all(s.api == "chat" and s.prompt_token_ids is None for s in specs)
    assert all(s.prompt == TUTORIAL_PROMPTS[s.request_id % len(TUTORIAL_PROMPTS)] for s in specs)


def test_bursty_waves_hit_every_instance() -> None:
    w = wl("bursty", waves=3, burst_size=6, idle_s=6.0)
    specs = build_schedule(w, AB)
    assert len(specs) == 3 * 6 * 2
    per = Counter((s.wave, s.instance) for s in specs)
    assert per == {(k, i): 6 for k in range(3) for i in AB}
    assert all(s.at_s == s.wave * 6.0 for s in specs)
    assert specs[0].instance != specs[1].instance  # interleaved within a burst
    assert chains_waves(w) and not chains_waves(replace(w, wait_for_wave=False))


def test_alternating_rounds_cycle_instances() -> None:
    w = wl("alternating", waves=5, burst_size=4, idle_s=5.0)
    specs = build_schedule(w, AB)
    assert len(specs) == 5 * 4
    for k in range(5):
        wave = [s for s in specs if s.wave == k]
        assert len(wave) == 4
        assert {s.instance for s in wave} == {AB[k % 2]}
        assert {s.at_s for s in wave} == {k * 5.0}
    three = build_schedule(replace(w, waves=6), ["a", "b", "c"])
    assert [next(s.instance for s in three if s.wave == k) for k in range(6)] == list("abcabc")


def test_poisson_rate_and_exponential_gaps() -> None:
    w = wl("poisson", rate=5.0, duration_s=2000.0, seed=3)
    specs = build_schedule(w, AB)
    for inst in AB:
        t = times(specs, inst)
        assert abs(len(t) - 10000) < 400  # 4 sigma
        assert t.max() < 2000.0 and t.min() > 0
        gaps = np.diff(t)
        assert gaps.mean() == pytest.approx(0.2, rel=0.04)
        assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert all(s.wave == -1 for s in specs)
    a, b = times(specs, "a"), times(specs, "b")
    assert not np.array_equal(a[:50], b[:50])  # independent streams per instance


def test_num_requests_caps_each_stream() -> None:
    only_n = build_schedule(wl("poisson", rate=2.0, duration_s=None, num_requests=25), AB)
    assert Counter(s.instance for s in only_n) == {"a": 25, "b": 25}
    both = build_schedule(wl("gamma", rate=2.0, duration_s=3.0, num_requests=1000), AB)
    assert all(s.at_s < 3.0 for s in both) and len(both) < 1000
    capped = build_schedule(wl("poisson", rate=50.0, duration_s=100.0, num_requests=7), AB)
    assert len(capped) == 14


def test_gamma_burstiness_sets_gap_variation() -> None:
    for shape in (0.25, 4.0):
        w = wl("gamma", rate=4.0, burstiness=shape, duration_s=None, num_requests=20000, seed=1)
        gaps = np.diff(np.concatenate([[0.0], times(build_schedule(w, ["a"]), "a")]))
        assert gaps.mean() == pytest.approx(0.25, rel=0.05)
        assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(shape), rel=0.1)


def test_onoff_staggered_alternates_and_zero_stagger_overlaps() -> None:
    w = wl("onoff", rate=4.0, period_s=20.0, on_s=10.0, stagger_s=10.0, duration_s=400.0)
    specs = build_schedule(w, AB)
    for i, inst in enumerate(AB):
        mine = [s for s in specs if s.instance == inst]
        phase_pos = np.array([(s.at_s - 10.0 * i) % 20.0 for s in mine])
        assert (phase_pos < 10.0).all()  # only during its own on phases
        assert len(mine) == pytest.approx(4.0 * 200.0, rel=0.15)  # rate x total on time
        for s in mine:  # wave = ordinal of the on phase within the run
            assert s.wave == int((s.at_s - 10.0 * i) // 20.0)
    a = times(specs, "a") % 20.0
    b = times(specs, "b") % 20.0
    assert (a < 10).all() and (b >= 10).all()
    overlap = build_schedule(replace(w, stagger_s=0.0), AB)
    assert all(s.at_s % 20.0 < 10.0 for s in overlap)
    assert {s.instance for s in overlap} == set(AB)


def test_onoff_shift_wraps_into_first_period() -> None:
    w = wl("onoff", rate=20.0, period_s=20.0, on_s=10.0, stagger_s=15.0, duration_s=40.0, seed=2)
    b = [s for s in build_schedule(w, AB) if s.instance == "b"]
    # instance b is on in [0, 5), [15, 25), [35, 40)
    assert all(s.at_s < 5 or 15 <= s.at_s < 25 or s.at_s >= 35 for s in b)
    assert {s.wave for s in b} == {0, 1, 2}
    assert all((s.wave == 0) == (s.at_s < 5) for s in b)


def test_seeding_is_deterministic() -> None:
    for kind in ("poisson", "gamma", "onoff"):
        w = wl(kind, rate=3.0, duration_s=30.0, burstiness=0.5, seed=11)
        assert build_schedule(w, AB) == build_schedule(w, AB)
        assert build_schedule(w, AB) != build_schedule(replace(w, seed=12), AB)
    # instance a's stream does not depend on how many instances follow it
    w = wl("poisson", rate=3.0, duration_s=30.0)
    assert np.array_equal(times(build_schedule(w, ["a"]), "a"), times(build_schedule(w, AB), "a"))


def test_random_token_prompts() -> None:
    w = wl("bursty", api="completions", random_input_len=64, waves=2, burst_size=5, seed=4)
    vocab = {"a": 1000, "b": 151936}
    specs = build_schedule(w, AB, vocab)
    for s in specs:
        assert s.prompt is None and s.prompt_token_ids is not None
        assert len(s.prompt_token_ids) == 64
        assert min(s.prompt_token_ids) >= 100 and max(s.prompt_token_ids) < vocab[s.instance]
    assert len({tuple(s.prompt_token_ids) for s in specs}) == len(specs)
    assert specs == build_schedule(w, AB, vocab)
    with pytest.raises(ValueError, match="vocab_sizes"):
        build_schedule(w, AB)
    with pytest.raises(ValueError, match="vocab_sizes"):
        build_schedule(w, AB, {"a": 1000})
    with pytest.raises(ValueError, match="api=completions"):
        build_schedule(replace(w, api="chat"), AB, vocab)


def test_check_workload_messages() -> None:
    assert check_workload(wl("bursty")) == []
    for kind in ("alternating", "poisson", "gamma", "onoff"):
        assert check_workload(wl(kind)) == [], kind
    cases = [
        (wl("poisson", rate=0.0), "rate"),
        (wl("bursty", burst_size=0), "burst_size"),
        (wl("alternating", waves=0), "waves"),
        (wl("gamma", duration_s=None, num_requests=None), "duration_s or num_requests"),
        (wl("gamma", burstiness=0.0), "burstiness"),
        (wl("onoff", on_s=30.0, period_s=20.0), "on_s"),
        (wl("bursty", max_tokens=0), "max_tokens"),
        (wl("steady"), "kind"),
        (wl("bursty", api="embeddings"), "api"),
        (wl("bursty", prompts=[]), "prompts"),
        (wl("poisson", random_input_len=16), "api=completions"),
        (wl("poisson", duration_s=-1.0), "duration_s"),
    ]
    for w, needle in cases:
        errors = check_workload(w)
        assert len(errors) == 1 and needle in errors[0], (needle, errors)
    with pytest.raises(ValueError, match="rate"):
        build_schedule(wl("poisson", rate=-1.0), AB)
    with pytest.raises(ValueError, match="no instances"):
        build_schedule(wl("bursty"), [])


def test_instances_can_have_workload_figures_of_their_own() -> None:
    w = wl("alternating", waves=4, burst_size=4)
    specs = build_schedule(w, ["a", "b"], per_instance={"b": replace(w, burst_size=1,
                                                                      max_tokens=7)})
    sizes = [sum(1 for s in specs if s.wave == k) for k in range(4)]
    assert sizes == [4, 1, 4, 1]
    assert {s.max_tokens for s in specs if s.instance == "b"} == {7}
    p = wl("poisson", rate=2.0, duration_s=200.0)
    specs = build_schedule(p, ["a", "b"], per_instance={"b": replace(p, rate=8.0)})
    n_a = sum(s.instance == "a" for s in specs)
    n_b = sum(s.instance == "b" for s in specs)
    assert 3 < n_b / n_a < 5  # four times the rate
    with pytest.raises(ValueError, match="differs"):
        build_schedule(p, ["a", "b"], per_instance={"b": replace(p, kind="gamma")})
