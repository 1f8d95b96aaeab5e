"""`python -m kvexp -m experiment=capacity engine=sim`: the search, on real sim points, gives
the brute-force grid's answer from fewer points, and writes capacity.json and its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Short points: 14B-shaped models on the simulated H200, the SLO loose enough that memory
# decides (kvcached: no room for a 5th; the host's load cannot change the answer).
SHORT = ["experiment=capacity", "engine=sim", "capacity.allocators=[kvcached]",
         "capacity.n_max=5", "workload.duration_s=5", "workload.max_tokens=16",
         "workload.lead_in_s=0.5", "workload.tail_s=0.5", "mix.rate=3",
         "capacity.min_requests=10", "capacity.max_send_lag_ms=5000", "slo.ttft_ms=20000",
         "slo.tpot_ms=5000", "sampler.interval_s=0.5", "sampler.kvcached_interval_s=0.5"]


def kvexp(tmp: Path, *argv: str) -> str:
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "kvexp", *argv], cwd=tmp, env=env, text=True,
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def capacity(tmp: Path, *extra: str) -> dict:
    tmp.mkdir(parents=True)
    kvexp(tmp, "-m", *SHORT, *extra, f"hydra.sweep.dir={tmp}")
    return json.loads((tmp / "capacity.json").read_text())


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A bisection's sweep folder and its capacity.json."""
    tmp = tmp_path_factory.mktemp("capacity") / "bisect"
    return tmp, capacity(tmp)


def test_the_search_gives_the_grids_answer_from_fewer_points(
    searched: tuple[Path, dict], tmp_path: Path
) -> None:
    bisect_dir, bisect = searched
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
    report = (bisect_dir / "report" / "summary.md").read_text()
    assert "## Capacity: models per GPU" in report
    assert "kvcached: 4 models per GPU" in report


def test_resume_keeps_the_finished_points_and_runs_the_one_a_kill_cut_short(
    searched: tuple[Path, dict]
) -> None:
    """`kill -9` of the sweep while its last point ran: capacity.json never written, that
    point's record still "running". `python -m kvexp resume DIR` walks the same search,
    keeps every finished point and runs only that one again (its attempt kept aside)."""
    sweep_dir, before = searched
    ran = [i for p in before["kvcached"]["points"] for i in p["points"]]
    last = sweep_dir / ran[-1]
    record = json.loads((last / "point.json").read_text())
    (last / "point.json").write_text(json.dumps({**record, "status": "running"}))
    (sweep_dir / "capacity.json").unlink()
    out = kvexp(sweep_dir, "resume", str(sweep_dir))
    assert out.count("finished in an earlier run, kept") == len(ran) - 1
    assert f"point {ran[-1]} " in out and (last / "previous" / "0" / "point.json").is_file()
    after = json.loads((sweep_dir / "capacity.json").read_text())
    assert after["_meta"]["status"] == "done"
    assert after["kvcached"]["max_n"] == before["kvcached"]["max_n"] == 4
    assert [i for p in after["kvcached"]["points"] for i in p["points"]] == ran
    assert sorted(d.name for d in sweep_dir.iterdir() if d.name.isdigit()) == sorted(ran)
