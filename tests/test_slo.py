"""SLOs per request, attainment and goodput (vLLM's --goodput definition)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from kvexp.config import ConfigError, SloConfig, register_configs, resolve_instances, to_config
from kvexp.results.records import RequestRow
from kvexp.results.slo import busy_span_s, meets_slo, slo_counts, slo_figures, wilson_interval
from tests.conftest import REPO_ROOT


def row(ok: bool = True, ttft: float | None = 0.1, tpot: float | None = 0.02,
        e2e: float | None = 1.0, itl: list[float] | None = None,
        instance: str = "a") -> RequestRow:
    return RequestRow(request_id=0, instance=instance, wave=-1, api="completions",
                      scheduled_time=0.0, sent_time=0.0, send_lag_s=0.0, ttft_s=ttft,
                      tpot_s=tpot, e2e_s=e2e, itl_s=itl or [0.02, 0.03], ok=ok)


def test_a_request_is_good_only_when_it_meets_every_limit_given() -> None:
    assert meets_slo(row(), None)
    assert meets_slo(row(), SloConfig())
    assert not meets_slo(row(ok=False), SloConfig())  # failed: never good
    assert meets_slo(row(), SloConfig(ttft_ms=100, tpot_ms=20, e2e_s=1.0))  # <= is good
    assert not meets_slo(row(), SloConfig(ttft_ms=99))
    assert not meets_slo(row(), SloConfig(tpot_ms=19))
    assert not meets_slo(row(), SloConfig(e2e_s=0.9))
    assert not meets_slo(row(), SloConfig(itl_ms=25))
    assert meets_slo(row(tpot=None), SloConfig(tpot_ms=1))  # one token: TPOT 0
    assert not meets_slo(row(ttft=None), SloConfig(ttft_ms=1000))  # no first token


def test_attainment_and_goodput_per_point_and_instance() -> None:
    # busy span: first send (10 s) to last completion (12 s); a's own: 10 -> 11 s
    req = pd.DataFrame({"instance": ["a", "a", "b", "b"],
                        "slo_ok": [True, False, True, True],
                        "sent_time": [10.0, 10.5, 10.2, 11.0],
                        "end_time": [10.8, 11.0, 11.5, 12.0]})
    f = slo_figures(req)
    assert f["slo_attainment"] == 0.75 and f["goodput_req_per_s"] == 1.5
    assert f["slo_attainment.a"] == 0.5 and f["goodput_req_per_s.a"] == 1.0
    assert f["slo_attainment.b"] == 1.0 and f["goodput_req_per_s.b"] == pytest.approx(2 / 1.8)
    assert f["slo_attainment_low"] < 0.75 < f["slo_attainment_high"]
    assert math.isnan(slo_figures(req.iloc[:0])["slo_attainment"])


def test_wilson_interval_matches_the_textbook_values() -> None:
    # by hand: centre (p + z²/2n) / (1 + z²/n) = 0.7408, half-width 0.0838 (z = 1.96)
    low, high = wilson_interval(75, 100)
    assert round(low, 4) == 0.6570 and round(high, 4) == 0.8245
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match=r"good requests \(11\) must lie in \[0, n = 10\]"):
        wilson_interval(11, 10)


def test_slo_counts_names_a_missing_column() -> None:
    with pytest.raises(KeyError, match="no column slo_ok"):
        slo_counts(pd.DataFrame({"instance": ["a"]}), ["instance"])
    with pytest.raises(KeyError, match="no column end_time"):
        busy_span_s(pd.DataFrame({"sent_time": [1.0]}))


def cfg_for(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base=None):
        return to_config(compose("config", overrides=list(overrides)))


def test_slo_group_and_per_instance_override() -> None:
    cfg = cfg_for("slo.ttft_ms=1000", "experiment=two_models", "+instances.small.slo.ttft_ms=200")
    slos = {i.name: i.slo for i in resolve_instances(cfg)}
    assert slos["small"].ttft_ms == 200 and slos["large"].ttft_ms == 1000
    assert cfg_for().slo == SloConfig()


def test_bad_slo_values_are_named() -> None:
    with pytest.raises(ConfigError, match="slo.tpot_ms must be > 0"):
        cfg_for("slo.tpot_ms=0")
    with pytest.raises(ConfigError, match=r"instances.small.slo: unknown keys \['ttft'\]"):
        cfg_for("experiment=two_models", "+instances.small.slo.ttft=5")


def test_trace_token_ids_must_fit_the_vocabulary() -> None:
    with pytest.raises(ConfigError, match=r"workload.min_token_id \(5000\) must be below "
                                          r"model.vocab_size \(2000\)"):
        cfg_for("workload=trace", "model=tiny", "workload.min_token_id=5000")
