"""The runner end to end with the simulated engine, as a user runs it: `python -m kvexp ...`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from kvexp.results import load

ROOT = Path(__file__).resolve().parents[1]
# A small, fast sim point: tiny model on a tiny simulated GPU, time running 5x faster.
FAST = [
    "engine=sim", "model=tiny", "engine.sim.gpu=tiny", "engine.sim.time_scale=0.2",
    "workload.waves=2", "workload.idle_s=0.3", "workload.max_tokens=16",
    "workload.lead_in_s=0.5", "workload.tail_s=0.6", "sampler.interval_s=0.05",
]


def kvexp(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVEXP_SHM_DIR": str(cwd)}
    return subprocess.run([sys.executable, "-m", "kvexp", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def sim_servers(under: Path) -> list[psutil.Process]:
    """Sim servers and point processes of runs under `under` (other tests' are not ours)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if ("kvexp.engines.sim" in cmd or "kvexp.point" in cmd) and str(under) in cmd:
            out.append(p)
    return out


def test_multirun_writes_parquet_rows_for_every_point(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "allocator=kvcached,static", "burst_size=1,3",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    res = load(sweep)
    assert len(res.summary) == 4
    assert set(res.summary["status"]) == {"ok"}
    assert set(res.summary["allocator"]) == {"kvcached", "static"}
    for _, row in res.summary.iterrows():
        req = res.requests[res.requests["point"] == row["point"]]
        assert len(req) == 2 * row["burst_size"]  # 2 waves of burst_size
        assert req["ok"].all()
        assert (req["completion_tokens"] > 0).all()
        mem = res.memory[res.memory["point"] == row["point"]]
        assert {"sim_device", "process", "engine"} <= set(mem["source"])
        assert row["peak_device_gib"] >= row["idle_device_gib"] > 0
    kv = res.memory[res.memory["source"] == "kvcached"]
    assert set(kv["point"]) == set(res.summary[res.summary["allocator"] == "kvcached"]["point"])
    # Every point folder has what the README promises.
    for d in sweep.iterdir():
        if d.name.isdigit():
            for f in ("config.yaml", "point.json", "requests.parquet", "memory.parquet",
                      "summary.parquet"):
                assert (d / f).exists(), f"{d}/{f}"
            servers = json.loads((d / "point.json").read_text())["servers"]
            assert servers and servers[0]["argv"]
    assert not sim_servers(tmp_path)
    assert "results:" in r.stdout


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # The 1.5B model's weights cannot fit on the 4 GiB `tiny` simulated GPU.
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "allocator=static", "model=qwen2.5-1.5b-instruct,tiny",
              f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 1
    s = load(sweep).summary.set_index("point")
    assert list(s["status"]) == ["failed", "ok"]
    assert "does not fit" in s.loc["0", "error"] or "exited with code" in s.loc["0", "error"]
    assert "failed" in r.stderr and "point 0" in r.stderr
    # The report is rendered anyway, and lists the failed point with its error.
    report = (sweep / "report" / "summary.md").read_text()
    assert "exited with code 1" in report
    assert (sweep / "report" / "report.html").exists()


def test_a_port_in_use_fails_the_point_clearly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = kvexp(*FAST, f"engine.port={port}", f"hydra.run.dir={tmp_path}/run/0",
                  "report=false", cwd=tmp_path)
    assert r.returncode == 1
    meta = json.loads((tmp_path / "run/0/point.json").read_text())
    assert meta["status"] == "failed"
    assert f"port {port}" in meta["error"] and "already in use" in meta["error"]
    assert not sim_servers(tmp_path)


def test_a_server_that_dies_at_start_fails_the_point_with_its_log(tmp_path: Path) -> None:
    # The 1.5B model's weights cannot fit on the 4 GiB `tiny` simulated GPU.
    r = kvexp(*FAST, "model=qwen2.5-1.5b-instruct", "allocator=static",
              f"hydra.run.dir={tmp_path}/run/0", "report=false", cwd=tmp_path)
    assert r.returncode == 1
    meta = json.loads((tmp_path / "run/0/point.json").read_text())
    assert "server exited with code" in meta["error"]
    assert "last lines of" in meta["error"]
    assert (tmp_path / "run/0/memory.parquet").exists()  # what was sampled is kept


def test_ctrl_c_stops_every_process_and_keeps_what_was_measured(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvexp", *FAST, "workload.waves=50", "workload.idle_s=1",
         f"hydra.run.dir={run}/0", "report=false"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    point = run / "0" / "point.json"
    while time.monotonic() < deadline:
        if point.exists() and "workload_start" in point.read_text():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the workload never started")
    # The live view sees the running instance's kvcached segment (limit, used, prealloc).
    top = subprocess.run([sys.executable, "-m", "kvexp", "top", "--once", "--shm-dir",
                          str(tmp_path)], text=True, capture_output=True, timeout=30,
                         env={**env, "COLUMNS": "200"})
    assert top.returncode == 0, top.stderr
    assert "kvcached_tiny_" in top.stdout and "MiB" in top.stdout
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted during point 0" in out
    meta = json.loads(point.read_text())
    assert meta["status"] == "failed" and "interrupted" in meta["error"]
    req = pd.read_parquet(run / "0" / "requests.parquet")
    assert len(req) > 0  # requests measured before Ctrl-C are kept
    assert not sim_servers(tmp_path)
    assert not list(tmp_path.glob("kvcached_*"))  # segments removed


def test_two_sweeps_started_together_never_share_a_folder(tmp_path: Path) -> None:
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    args = [sys.executable, "-m", "kvexp", *FAST, "workload.waves=1", "report=false",
            "name=same"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    sweeps = list((tmp_path / "outputs" / "same").iterdir())
    assert len(sweeps) == 2
    assert all((s / "0" / "summary.parquet").exists() for s in sweeps)


def test_a_server_not_ready_in_time_fails_the_point_and_is_stopped(tmp_path: Path) -> None:
    r = kvexp(*FAST, "engine.sim.startup_s=60", "engine.ready_timeout_s=2",
              f"hydra.run.dir={tmp_path}/run/0", "report=false", cwd=tmp_path)
    assert r.returncode == 1
    meta = json.loads((tmp_path / "run/0/point.json").read_text())
    assert "not ready after 2 s" in meta["error"]
    assert "kvexp sim engine" in meta["error"]  # the log tail is in the error
    assert not sim_servers(tmp_path)


def test_repeats_interleave_the_compared_settings(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=1", "allocator=kvcached,static", "repeats=2",
              f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = load(sweep).summary.sort_values("point", key=lambda p: p.astype(int))
    assert list(s["allocator"]) == ["kvcached", "static", "kvcached", "static"]  # A B A B
    assert list(s["repeat"]) == [0, 0, 1, 1]
    assert s["label"].nunique() == 2  # the two repeats of a setting share its label
    assert all("repeat=" not in label for label in s["label"])
    assert "n=2" in (sweep / "report" / "summary.md").read_text()


def test_sim_static_pool_is_held_from_start_and_elastic_pool_follows_the_load(
        tmp_path: Path) -> None:
    """Bursts of long sequences on the Qwen2.5-0.5B shape: ~7 pages of 48 MiB per wave."""
    sweep = tmp_path / "sweep"
    r = kvexp("-m", "engine=sim", "engine.sim.time_scale=0.2", "workload=random_tokens",
              "burst_size=32", "workload.waves=2", "workload.idle_s=2", "workload.lead_in_s=1",
              "workload.tail_s=2", "sampler.interval_s=0.05", "allocator=kvcached,static",
              "allocator.min_reserved_pages=1", "allocator.max_reserved_pages=2",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    res = load(sweep)
    page = 2 * 2**20 * 24  # 2 MiB x 24 layers
    for _, row in res.summary.iterrows():
        meta = res.points.set_index("point").loc[row["point"]]
        mem = res.memory[(res.memory["point"] == row["point"])]
        dev = mem[(mem["source"] == "sim_device") & (mem["metric"] == "device_used_bytes")
                  & (mem["time"] >= meta["ready_time"])]
        req = res.requests[res.requests["point"] == row["point"]]
        assert req["ok"].all() and (req["completion_tokens"] == 400).all()
        if row["allocator"] == "static":
            assert dev["value"].max() - dev["value"].min() < 2**20  # held, unchanged, from start
            assert row["idle_device_gib"] > 70
            continue
        held = mem[mem["metric"] == "kv_held_bytes"].set_index("time")["value"]
        idle = held[held.index < meta["workload_start"]].iloc[-1]
        for _, wave in req.groupby("wave"):
            during = held[(held.index >= wave["sent_time"].min())
                          & (held.index <= wave["end_time"].max())]
            after = held[held.index > wave["end_time"].max() + 0.5].iloc[0]
            assert during.max() >= idle + 5 * page  # grew under the burst
            assert after <= idle + 2 * page  # shrank after it, to the reserve
        assert row["idle_device_gib"] < 5
        assert row["peak_device_gib"] > row["idle_device_gib"] + 5 * page / 2**30
