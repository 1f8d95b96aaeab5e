"""`python -m kvexp -m experiment=capacity engine=sim`: the search, on real sim points, gives
the brute-force grid's answer from fewer points, and writes capacity.json and its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Short points: 14B-shaped models on the simulated H200, the SLO loose enough that memory
# decides (kvcached: no room for a 5th; the host's load cannot change the answer).
SHORT = ["experiment=capacity", "engine=sim", "capacity.allocators=[kvcached]",
         "capacity.n_max=5", "workload.duration_s=5", "workload.max_tokens=16",
         "workload.lead_in_s=0.5", "workload.tail_s=0.5", "mix.rate=3",
         "capacity.min_requests=10", "capacity.max_send_lag_ms=5000", "slo.ttft_ms=20000",
         "slo.tpot_ms=5000", "sampler.interval_s=0.5", "sampler.kvcached_interval_s=0.5"]


def capacity(tmp: Path, *extra: str) -> dict:
    tmp.mkdir(parents=True)
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "kvexp", "-m", *SHORT, *extra,
                        f"hydra.sweep.dir={tmp}"], cwd=tmp, env=env, text=True,
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((tmp / "capacity.json").read_text())


def test_the_search_gives_the_grids_answer_from_fewer_points(tmp_path: Path) -> None:
    bisect = capacity(tmp_path / "bisect")
    brute = capacity(tmp_path / "grid", "capacity.method=grid")
    a, g = bisect["kvcached"], brute["kvcached"]
    assert a["max_n"] == g["max_n"] == 4
    ran = [p for p in a["points"] if p["points"]]
    ran_grid = [p for p in g["points"] if p["points"]]
    assert len(ran) < len(ran_grid) == 4  # grid: N = 1..4 run, 5 refused
    assert a["limit"].startswith("kvcached: no room for 5 instances")
    assert [p["n"] for p in a["points"] if p["no_room"]] == [5]  # refused, never started
    best = next(p for p in a["points"] if p["n"] == 4)
    assert best["met"] and best["requests"] >= 10 and best["attainment"] >= 0.99
    lo, hi = a["interval"]
    assert lo <= a["attainment"] <= hi
    assert bisect["_meta"]["simulated_engines"] == ["sim"]
    assert all(s > 0 for p in ran for s in p["startup_s"])
    report = (tmp_path / "bisect" / "report" / "summary.md").read_text()
    assert "## Capacity: models per GPU" in report
    assert "kvcached: 4 models per GPU" in report
