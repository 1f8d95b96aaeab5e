"""Several models sharing one (simulated) GPU, as `python -m kvexp -m experiment=two_models`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvexp.results import load

GIB = 2**30
# The two-model preset, shortened: 4 rounds, simulated time 5x faster.
SHORT = ["experiment=two_models", "engine=sim", "engine.sim.time_scale=0.2",
         "workload.waves=4", "workload.idle_s=1", "workload.max_tokens=32",
         "workload.lead_in_s=1", "workload.tail_s=1", "sampler.interval_s=0.05"]


def run_sweep(tmp_path: Path, *overrides: str) -> Path:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "kvexp", "-m", *SHORT, *overrides,
                        f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, text=True,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("two_models")
    return run_sweep(tmp, "allocator=kvcached,static", "instances.large.allocator.kv_limit_gb=1.5",
                     "+instances.large.workload.burst_size=2")


def test_rounds_alternate_between_the_models(sweep: Path) -> None:
    req = load(sweep).requests
    for _, point in req.groupby("point"):
        by_round = point.groupby("wave")["instance"].unique()
        assert [list(v) for v in by_round] == [["small"], ["large"], ["small"], ["large"]]
        # Rounds of 4 requests; `large` has a workload of its own: rounds of 2.
        assert list(point.groupby("wave").size()) == [4, 2, 4, 2]
        assert point["ok"].all()


def test_memory_is_attributed_per_model_next_to_the_device_total(sweep: Path) -> None:
    res = load(sweep)
    for _, row in res.summary.iterrows():
        mem = res.memory[res.memory["point"] == row["point"]]
        per = mem[mem["metric"] == "process_gpu_bytes"].groupby("instance")["value"].max()
        assert set(per.index) == {"small", "large"}
        assert per["large"] > per["small"] > 0  # 1.5B weights > 0.5B weights
        device = mem[mem["metric"] == "device_used_bytes"]["value"].max()
        assert device >= per.sum()
        if row["allocator"] == "static":
            # The static split: each instance holds about its share of the device.
            total = mem[mem["metric"] == "device_total_bytes"]["value"].iloc[0]
            assert per["small"] == pytest.approx(0.3 * total, rel=0.05)
            assert per["large"] == pytest.approx(0.4 * total, rel=0.05)
        else:
            assert device < 0.1 * mem[mem["metric"] == "device_total_bytes"]["value"].iloc[0]


def test_instance_kv_limits_from_config_reach_the_segment(sweep: Path) -> None:
    res = load(sweep)
    kv = res.memory[(res.memory["source"] == "kvcached") & (res.memory["metric"] ==
                                                            "kv_limit_bytes")]
    limits = kv.groupby("instance")["value"].last()
    assert limits["large"] == 1.5 * GIB  # what kvctl limit would have written
    assert limits["small"] > 10 * GIB  # no limit: the instance's virtual capacity


def test_the_report_shows_memory_per_model(sweep: Path) -> None:
    report = sweep / "report"
    assert (report / "memory_per_model.png").stat().st_size > 10_000
    summary = (report / "summary.md").read_text()
    assert "Memory per model" in summary
    per_model = summary.split("## Per model")[1].split("##")[0]
    for point in ("0", "1"):
        for inst in ("small", "large"):
            assert f"| {point} | " in per_model and f"| {inst} |" in per_model
