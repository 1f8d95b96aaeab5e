"""workload=trace end to end with the simulated engine: `python -m kvexp workload=trace ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kvexp.workloads.traces import TraceOptions, plan_trace

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "engine=sim", "model=tiny", "engine.sim.gpu=tiny", "engine.sim.time_scale=0.2",
    "workload=trace", "workload.lead_in_s=0.5", "workload.tail_s=0.5",
    "sampler.interval_s=0.05", "report=false",
]


def kvexp(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python -m kvexp` of this tree (PYTHONPATH), in `cwd`."""
    env = {**os.environ, "KVEXP_SHM_DIR": str(cwd), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kvexp", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_trace_replay_sends_the_traced_lengths_and_records_the_plan(tmp_path: Path) -> None:
    run = tmp_path / "s" / "0"
    r = kvexp(*FAST, "workload.num_requests=24", "workload.time_scale=40",
              "workload.max_model_len=300", "slo.e2e_s=1000", f"hydra.run.dir={run}",
              cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = plan_trace("excerpt:mooncake_conversation.jsonl",
                      TraceOptions(max_requests=24, time_scale=40, max_model_len=300))
    req = pd.read_parquet(run / "requests.parquet").sort_values("request_id")
    assert req["ok"].all()
    assert list(req["prompt_tokens"]) == [q.input_tokens for q in plan.requests]
    assert list(req["completion_tokens"]) == [q.output_tokens for q in plan.requests]
    meta = json.loads((run / "point.json").read_text())
    stats = meta["trace"]["tiny"]
    assert stats["kept"] == 24 and stats["clipped_rows"] == plan.stats.clipped_rows > 0
    assert stats["time_scale"] == 40
    summary = pd.read_parquet(run / "summary.parquet").iloc[0]
    assert summary["trace_clipped_rows"] == plan.stats.clipped_rows
    assert summary["trace_skipped_rows"] == 0
    assert summary["trace_skipped_rows.tiny"] == 0
    assert req["slo_ok"].all() and summary["slo_attainment"] == 1.0
    busy = req["end_time"].max() - req["sent_time"].min()  # first send to last completion
    assert summary["busy_s"] == pytest.approx(busy)
    assert summary["goodput_req_per_s"] == pytest.approx(24 / busy)
    assert summary["goodput_req_per_s.tiny"] == summary["goodput_req_per_s"]
    assert "SLO %" in r.stdout and "good/s" in r.stdout


def test_trace_skip_policy_counts_the_dropped_rows(tmp_path: Path) -> None:
    run = tmp_path / "s" / "0"
    r = kvexp(*FAST, "workload.path=excerpt:azure2023_code.csv", "workload.num_requests=10",
              "workload.time_scale=40", "workload.max_model_len=500",
              "workload.length_policy=skip", "slo.ttft_ms=0.001",
              f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = plan_trace("excerpt:azure2023_code.csv",
                      TraceOptions(max_requests=10, time_scale=40, max_model_len=500,
                                   length_policy="skip"))
    summary = pd.read_parquet(run / "summary.parquet").iloc[0]
    assert summary["trace_skipped_rows"] == plan.stats.skipped_rows > 0
    req = pd.read_parquet(run / "requests.parquet")
    assert len(req) == 10 and req["ok"].all()
    assert not req["slo_ok"].any() and summary["slo_attainment"] == 0.0
    assert summary["goodput_req_per_s"] == 0.0


def test_a_bad_trace_key_is_named(tmp_path: Path) -> None:
    r = kvexp(*FAST, "workload.length_policy=crop", f"hydra.run.dir={tmp_path / 's' / '0'}",
              cwd=tmp_path)
    assert r.returncode != 0
    assert "length_policy" in r.stdout + r.stderr


def test_azure_two_models_preset_reports_goodput_per_instance(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", "experiment=azure_two_models", "engine=sim", "engine.sim.time_scale=0.2",
              "workload.time_scale=20", "workload.num_requests=15", "workload.lead_in_s=0.5",
              "workload.tail_s=0.5", "sampler.interval_s=0.05", "report=false",
              f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=170)
    assert r.returncode == 0, r.stdout + r.stderr
    from kvexp.results import load

    res = load(sweep)
    assert sorted(res.summary["allocator"]) == ["kvcached", "static"]
    for _, row in res.summary.iterrows():
        for col in ("slo_attainment", "goodput_req_per_s"):
            for suffix in ("", ".code", ".conv"):
                assert 0 <= row[col + suffix] == row[col + suffix], (col, suffix)
        assert row["trace_kept.code"] == row["trace_kept.conv"] == 15
        assert row["trace_clipped_rows.code"] > 0  # code prompts are longer than 2048
    assert "slo_ok" in res.requests
    assert set(res.requests["instance"]) == {"code", "conv"}
    assert (res.requests["prompt_tokens"] + res.requests["completion_tokens"] <= 2048).all()
