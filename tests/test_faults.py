"""Fault injection: bad input, servers that die or misbehave, interrupts, and resume.

Servers misbehave on purpose through the sim engine's `engine.sim.fault` (exit, kill,
hang, garbage; kvexp/engines/sim/faults.py). After every run, no process of it survives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kvexp.engines.sim.device import SimDevice
from kvexp.results import load
from tests.test_runner import FAST, kvexp, sim_servers

pytestmark = pytest.mark.slow


def points(sweep: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "point.json").read_text())
            for d in sweep.iterdir() if (d / "point.json").exists()}


def assert_nothing_left(tmp_path: Path, sweep: Path) -> None:
    """No server or point process, no kvcached segment, no simulated GPU memory held."""
    assert not sim_servers(tmp_path)
    assert not list(tmp_path.glob("kvcached_*"))
    for dev in sweep.rglob("sim-device.json"):
        snap = SimDevice(dev).snapshot()
        assert snap is None or not snap.processes, dev
    assert not list(sweep.rglob("*.tmp"))  # every file written whole


@pytest.mark.parametrize("overrides, message", [
    (["burst_size=2,-1"], "burst_size must be >= 1, got -1"),
    (["allocator.gpu_memory_utilization=0.5,1.5"],
     "allocator.gpu_memory_utilization must be in (0, 1], got 1.5"),
    (["model.source=local", "model.path=/no/such/model"],
     "model.path '/no/such/model' is not a model folder (no config.json there)"),
    (["workload=random_tokens", "workload.random_input_len=500"],
     "model.max_model_len (512) is below the prompt plus output"),
    (["workload.max_tokens=600"], "model.max_model_len (512) leaves no room for a prompt"),
    (["experiment=two_models", "allocator=static",
      "instances.small.allocator.gpu_memory_utilization=0.7"],
     "static split cannot fit on one device"),
    (["engine.sim.fault=sometimes"], "engine.sim.fault must be one of none, exit, kill"),
    (["+workload.burst_szie=3"],
     "workload.burst_szie is not a key of WorkloadConfig; did you mean workload.burst_size?"),
    (["experiment=two_models", "burst_size=2,6"],
     "burst_size is swept over 2, 6 but no point reads it"),
])
def test_bad_values_are_refused_before_anything_starts(
        tmp_path: Path, overrides: list[str], message: str) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, *overrides, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "sweep refused, nothing was started" in r.stderr
    assert message in r.stderr
    assert not sweep.exists()


def test_an_unknown_option_lists_the_choices(tmp_path: Path) -> None:
    r = kvexp("-m", *FAST, "model=tiny,llama-9000", f"hydra.sweep.dir={tmp_path}/s",
              cwd=tmp_path)
    assert r.returncode != 0
    assert "Could not find 'model/llama-9000'" in r.stderr
    assert "qwen2.5-0.5b-instruct" in r.stderr and "tiny" in r.stderr  # the choices
    assert not (tmp_path / "s" / "0").exists()


def test_a_bad_single_run_is_refused(tmp_path: Path) -> None:
    r = kvexp(*FAST, "workload.waves=0", f"hydra.run.dir={tmp_path}/run/0", cwd=tmp_path)
    assert r.returncode == 2
    assert "workload.waves must be >= 1, got 0" in r.stderr
    assert not (tmp_path / "run/0/point.json").exists()


def test_servers_that_die_fail_their_point_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=3", "workload.max_tokens=64",
              "engine.sim.fault=none,exit,kill", "engine.sim.fault_after_s=0.5",
              f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # a point failed: non-zero, after the report
    assert (sweep / "report" / "report.html").exists()
    s = load(sweep).summary.set_index("point")
    assert list(s["status"]) == ["ok", "failed", "failed"]
    assert "server exited with code 3" in s.loc["1", "error"]
    assert "killed by SIGKILL" in s.loc["2", "error"] and "OOM killer" in s.loc["2", "error"]
    for p in ("1", "2"):
        assert "FAULT INJECTED" in s.loc[p, "error"]  # the log tail is in the error
        req = pd.read_parquet(sweep / p / "requests.parquet")
        assert len(req) > 0  # what was measured until the death is kept
        assert (~req["ok"]).sum() == s.loc[p, "failed"] > 0
        assert (sweep / p / "memory.parquet").exists()
    assert "failed" in (sweep / "report" / "summary.md").read_text()
    assert_nothing_left(tmp_path, sweep)


def test_hanging_and_garbled_streams_are_rows_with_their_error(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=3", "workload.max_tokens=64",
              "workload.request_timeout_s=2", "engine.sim.fault=hang,garbage",
              "engine.sim.fault_after_s=0", f"hydra.sweep.dir={sweep}", "report=false",
              cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # every request failed: so did the points
    res = load(sweep)
    s = res.summary.set_index("point")
    assert list(s["failed"]) == [3, 3]  # the rows are kept
    for p in points(sweep).values():
        assert p["status"] == "failed"
        assert p["error"].startswith("3 of 3 requests failed, more than max_failed_share=0.5")
    errors = res.requests.groupby("point")["error"].first()
    assert errors["0"].startswith("timeout: no complete response within 2 s")
    assert errors["1"].startswith("malformed SSE event")
    assert_nothing_left(tmp_path, sweep)


def _start_sweep(tmp_path: Path, sweep: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "kvexp", "-m", *FAST, "burst_size=1,2,3", "workload.waves=2",
         *extra, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{path} never said {text!r}")


def test_sigterm_stops_everything_and_resume_finishes_the_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = _start_sweep(tmp_path, sweep, "workload.idle_s=2")
    _wait_for(sweep / "1" / "point.json", "workload_start", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out  # 128 + SIGTERM: interrupted
    assert "interrupted during point 1" in out
    before = points(sweep)
    assert before["0"]["status"] == "ok"
    assert before["1"]["status"] == "failed" and "interrupted" in before["1"]["error"]
    assert "2" not in before
    assert len(pd.read_parquet(sweep / "1" / "requests.parquet")) > 0  # kept
    assert_nothing_left(tmp_path, sweep)

    r = kvexp("resume", str(sweep), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"point 0 \(.*burst_size=1.*\): finished in an earlier run, kept", r.stdout)
    after = points(sweep)
    assert {p: m["status"] for p, m in after.items()} == {"0": "ok", "1": "ok", "2": "ok"}
    assert after["0"]["job_start"] == before["0"]["job_start"]  # not run again
    old = json.loads((sweep / "1" / "previous" / "0" / "point.json").read_text())
    assert "interrupted" in old["error"]  # the interrupted attempt is kept aside
    assert len(load(sweep).summary) == 3
    assert_nothing_left(tmp_path, sweep)


def test_resume_refuses_a_different_sweep_in_the_same_folder(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=1", f"hydra.sweep.dir={sweep}",
              "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=4", f"hydra.sweep.dir={sweep}",
              "report=false", cwd=tmp_path)
    assert r.returncode == 2
    assert "holds another sweep" in r.stderr and "burst_size=1" in r.stderr
    assert points(sweep)["0"]["choices"]["burst_size"] == 1  # untouched


def test_ctrl_c_twice_still_cleans_up(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = _start_sweep(tmp_path, sweep, "workload.idle_s=2")
    _wait_for(sweep / "0" / "point.json", "workload_start", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert_nothing_left(tmp_path, sweep)


def test_a_kvcached_server_without_its_segment_fails_its_point(tmp_path: Path) -> None:
    # as vLLM does when its Python cannot import kvcached: a static pool, no segment
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "allocator=kvcached", "engine.sim.fault=no_kvcached",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    point = points(sweep)["0"]
    assert point["status"] == "failed"
    assert "kvcached is not active" in point["error"]
    assert "not importable by the server's Python" in point["error"]
    assert_nothing_left(tmp_path, sweep)


def test_credentials_in_the_environment_are_not_written(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path), "HF_TOKEN": "hf_secret_value",
           "VLLM_API_KEY": "k_secret_value", "VLLM_LOGGING_LEVEL": "INFO"}
    r = subprocess.run([sys.executable, "-m", "kvexp", "-m", *FAST, "workload.waves=1",
                        f"hydra.sweep.dir={sweep}", "report=false"], cwd=tmp_path, env=env,
                       text=True, capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr
    text = "".join(p.read_text() for p in sweep.rglob("*.json"))
    assert "secret_value" not in text
    server = points(sweep)["0"]["servers"][0]
    assert server["inherited_env"]["HF_TOKEN"] == "<redacted>"
    assert server["inherited_env"]["VLLM_LOGGING_LEVEL"] == "INFO"  # the rest is kept


def test_a_second_writer_of_a_sweep_folder_is_refused_with_the_holders_pid(
        tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    first = _start_sweep(tmp_path, sweep, "report=false")
    _wait_for(sweep / "0" / "point.json", "workload_start", first)
    second = kvexp("-m", *FAST, "burst_size=1,2,3", "workload.waves=2",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    resumed = subprocess.run([sys.executable, "-m", "kvexp", "resume", str(sweep)],
                             cwd=tmp_path, text=True, capture_output=True, timeout=120,
                             env={**os.environ, "KVEXP_SHM_DIR": str(tmp_path)})
    out, _ = first.communicate(timeout=180)
    assert first.returncode == 0, out
    for r in (second, resumed):
        assert r.returncode == 2, r.stderr
        assert f"is in use by another kvexp sweep or resume (pid {first.pid})" in r.stderr
    assert {p["status"] for p in points(sweep).values()} == {"ok"}
    assert not (sweep / "0" / "previous").exists()  # the refused writers touched nothing
    assert_nothing_left(tmp_path, sweep)
