"""Sweeps through Hydra's parallel launchers, with the sim: `hydra/launcher=joblib` (points in
loky worker processes of one host) and `hydra/launcher=submitit_local` (each point a
submitit job, as on SLURM, but as local subprocesses)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import psutil
import pytest

from kvexp.results import load

pytestmark = pytest.mark.slow

# Short sim points: tiny model on a tiny simulated GPU, one wave, no idle lead-in or tail.
FAST = [
    "engine=sim", "model=tiny", "engine.sim.gpu=tiny", "engine.sim.time_scale=0.2",
    "workload.waves=1", "workload.max_tokens=16", "workload.lead_in_s=0",
    "workload.tail_s=0", "sampler.interval_s=0.05",
]
MARK = "KVEXP_LAUNCHER_TEST"  # every process of a run inherits it: survivors are found by it


def sweep_with(launcher: list[str], tmp_path: Path, *overrides: str
               ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path), MARK: str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "kvexp", "-m", *launcher, *FAST, *overrides,
                        f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, text=True,
                       capture_output=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return sweep, r


def points(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("[0-9]*/point.json"))]


def survivors(tmp_path: Path) -> list[str]:
    """Processes of the run still alive: the sweep dir in their command line, or our mark."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(p.info["cmdline"] or [])
            if str(tmp_path) in cmd or p.environ().get(MARK) == str(tmp_path):
                out.append(f"{p.info['pid']}: {cmd[:200]}")
    return out


def assert_nothing_survives(tmp_path: Path) -> None:
    deadline = time.monotonic() + 15  # pool workers notice their parent's exit
    while (left := survivors(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left


def overlapping(metas: list[dict]) -> list[tuple[str, str]]:
    """Pairs of points whose wall times (sweep side: job_start..job_end) overlap."""
    return [(a["point"], b["point"]) for a, b in combinations(metas, 2)
            if a["job_start"] < b["job_end"] and b["job_start"] < a["job_end"]]


def max_concurrent(metas: list[dict]) -> int:
    edges = sorted([(m["job_start"], 1) for m in metas] + [(m["job_end"], -1) for m in metas])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def assert_parallel_points(metas: list[dict], n: int) -> None:
    assert len(metas) == n
    assert {m["status"] for m in metas} == {"ok"}, [(m["point"], m["error"]) for m in metas]
    assert overlapping(metas), [(m["job_start"], m["job_end"]) for m in metas]
    for m in metas:  # the point's own phases lie within its job
        assert m["job_start"] <= m["launch_time"] <= m["end_time"] <= m["job_end"]
    ports = [s["port"] for m in metas for s in m["servers"]]
    assert len(ports) == len(set(ports)) == n, ports  # each point its own server and port


def test_joblib_runs_points_in_parallel(tmp_path: Path) -> None:
    sweep, r = sweep_with(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path,
                          "burst_size=1,2,3")
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    metas = points(sweep)
    assert_parallel_points(metas, 3)
    assert max_concurrent(metas) <= 2  # n_jobs is honoured
    # The report is rendered once, by the sweep process, from every point.
    summary = (sweep / "report" / "summary.md").read_text()
    assert (sweep / "report" / "report.html").exists()
    for n in (1, 2, 3):
        assert f"burst_size={n}" in summary
    res = load(sweep)
    assert sorted(res.summary["burst_size"]) == [1, 2, 3]
    assert (res.requests.groupby("point").size().sort_index() == [1, 2, 3]).all()
    assert "(3 points, 0 failed)" in r.stdout
    assert_nothing_survives(tmp_path)


def test_submitit_local_runs_points_as_jobs(tmp_path: Path) -> None:
    sweep, r = sweep_with(["hydra/launcher=submitit_local"], tmp_path, "burst_size=1,2",
                          "report=false")
    metas = points(sweep)
    assert_parallel_points(metas, 2)
    res = load(sweep)
    assert set(res.summary["status"]) == {"ok"}
    assert sorted(res.summary["burst_size"]) == [1, 2]
    assert len(res.requests) == 3 and res.requests["ok"].all()
    assert not (sweep / "report").exists()
    assert "(2 points, 0 failed)" in r.stdout
    # submitit keeps each job's pickles and logs next to the points.
    assert list((sweep / ".submitit").glob("*/*_0_log.out"))
    assert_nothing_survives(tmp_path)


def test_parallel_points_each_get_their_own_gpu(tmp_path: Path) -> None:
    """Without a GPU here, a stand-in for vLLM's interpreter logs the CUDA_VISIBLE_DEVICES it
    was given, stays up 3 s (so that the points overlap), then fails its point."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\necho "stand-in: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"\n'
                    "sleep 3\nexit 3\n")
    fake.chmod(0o755)
    sweep = tmp_path / "sweep"
    env = {**os.environ, MARK: str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "kvexp", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "engine=vllm", f"engine.vllm.python={fake}", "model=tiny", "allocator=static",
         "engine.gpu_ids=[4,5]", f"engine.gpu_lock_dir={tmp_path}/locks", "burst_size=1,2",
         "sampler.device=false", "sampler.processes=false", "report=false",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, text=True, capture_output=True,
        timeout=180)
    assert r.returncode == 1, r.stderr[-3000:]  # the stand-in fails every point, on purpose
    seen = sorted((sweep / p / "logs" / "tiny.log").read_text().split("=")[-1].strip()
                  for p in ("0", "1"))
    assert seen == ["4", "5"]
    assert sorted(m["gpus"][0] for m in points(sweep)) == [4, 5]
    assert_nothing_survives(tmp_path)


@pytest.mark.parametrize("to, sig", [("process group", signal.SIGINT),
                                     ("main process", signal.SIGINT),
                                     ("main process", signal.SIGTERM)])
def test_ctrl_c_under_joblib_keeps_the_running_points_data(tmp_path: Path, to: str,
                                                           sig: signal.Signals) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path), MARK: str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvexp", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         *FAST, "workload.waves=30", "workload.idle_s=1", "burst_size=1,2,3",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while sum("workload_start" in p.read_text() for p in sweep.glob("*/point.json")) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "points never ran"
        time.sleep(0.2)
    time.sleep(1)
    if to == "process group":  # what a terminal's Ctrl-C does
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, out[-3000:]  # 130 for Ctrl-C, 143 for SIGTERM
    ran = [m for m in points(sweep) if m["error"] != "not run: the sweep was interrupted"]
    assert len(ran) == 2
    for meta in ran:
        assert meta["status"] == "failed" and "interrupted" in meta["error"]
        assert (sweep / meta["point"] / "requests.parquet").exists()
    assert (sweep / "report" / "report.html").exists()
    assert not list(tmp_path.glob("kvcached_*"))
    assert_nothing_survives(tmp_path)


def test_fixed_ports_are_refused_when_points_run_together(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kvexp", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         *FAST, "engine.port=18123", "burst_size=1,2", f"hydra.sweep.dir={tmp_path}/s"],
        cwd=tmp_path, text=True, capture_output=True, timeout=120)
    assert r.returncode == 2
    assert "ports null" in r.stderr and not (tmp_path / "s").exists()


def test_a_job_the_launcher_lost_is_a_failed_point(tmp_path: Path) -> None:
    from kvexp.sweep.sweeper import _job_failed

    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "point.json").write_text(json.dumps(
        {"point": "3", "label": "burst_size=2", "status": "running", "error": "",
         "overrides": ["burst_size=2"]}))
    _job_failed(tmp_path / "3", ["burst_size=2"], TimeoutError("SLURM time limit"))
    meta = json.loads((tmp_path / "3" / "point.json").read_text())
    assert meta["status"] == "failed"
    assert "the launcher's job failed: TimeoutError: SLURM time limit" in meta["error"]
    assert load(tmp_path).summary.iloc[0]["status"] == "failed"
