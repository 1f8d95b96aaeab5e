"""A sweep through the real vLLM server on the CPU, as in the README:

    python -m kvexp -m engine=vllm_cpu allocator=static model=tiny burst_size=1,3
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from kvexp.results import load

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_real_vllm_sweep_writes_parquet_for_every_point(tmp_path: Path, vllm_python: str) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "KVEXP_VLLM_PYTHON": vllm_python}
    r = subprocess.run(
        [sys.executable, "-m", "kvexp", "-m", "engine=vllm_cpu", "allocator=static",
         "model=tiny", "burst_size=1,3", "workload=random_tokens", "workload.waves=2",
         "workload.random_input_len=32", "workload.max_tokens=12", "workload.idle_s=1",
         "workload.lead_in_s=1", "workload.tail_s=1", f"models_dir={tmp_path}/models",
         f"hydra.sweep.dir={sweep}"],
        env=env, text=True, capture_output=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = load(sweep)
    assert sorted(res.summary["burst_size"]) == [1, 3]
    assert set(res.summary["status"]) == {"ok"}
    assert set(res.summary["engine"]) == {"vllm"}
    for _, row in res.summary.iterrows():
        req = res.requests[res.requests["point"] == row["point"]]
        assert len(req) == 2 * row["burst_size"]
        assert req["ok"].all(), req["error"].tolist()
        # ignore_eos + max_tokens: the server's own usage says exactly 12 tokens each.
        assert (req["completion_tokens"] == 12).all()
        assert (req["prompt_tokens"] == 32).all()
        assert (req["ttft_s"] > 0).all() and (req["e2e_s"] >= req["ttft_s"]).all()
        assert req["itl_s"].map(len).sum() > 0
        mem = res.memory[res.memory["point"] == row["point"]]
        engine = mem[mem["source"] == "engine"]
        assert {"kv_cache_usage", "num_requests_running", "num_gpu_blocks"} <= set(
            engine["metric"])
        rss = mem[(mem["source"] == "process") & (mem["metric"] == "rss_bytes")]
        assert rss["value"].max() > 100 * 2**20  # a real vLLM server's process tree
    # The server argv and environment are kept with the results.
    servers = res.points  # flattened scalars only; the full record is in point.json
    assert len(servers) == 2
    assert (sweep / "report" / "report.html").exists()
    # No GPU signal on the CPU: memory over time shows the servers' host memory instead.
    assert (sweep / "report" / "memory_over_time.png").stat().st_size > 10_000
    assert "host RSS" in (sweep / "report" / "summary.md").read_text()
    left = [p for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not left, "a server of the sweep is still running"
