"""SLOs per request, attainment and goodput (vLLM's --goodput definition)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from kvexp.config import ConfigError, SloConfig, register_configs, resolve_instances, to_config
from kvexp.results.records import RequestRow
from kvexp.results.slo import meets_slo, slo_figures
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
    req = pd.DataFrame({"instance": ["a", "a", "b", "b"],
                        "slo_ok": [True, False, True, True]})
    f = slo_figures(req, {"workload_start": 10.0, "workload_end": 12.0})
    assert f["slo_attainment"] == 0.75 and f["goodput_req_per_s"] == 1.5
    assert f["slo_attainment.a"] == 0.5 and f["goodput_req_per_s.a"] == 0.5
    assert f["slo_attainment.b"] == 1.0 and f["goodput_req_per_s.b"] == 1.0
    assert math.isnan(slo_figures(req.iloc[:0], {})["slo_attainment"])


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
