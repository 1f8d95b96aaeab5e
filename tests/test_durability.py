"""What survives when a point's process is killed outright (SIGKILL, the OOM killer): the
request rows and memory samples it journaled until then (kvexp/results/journal.py)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest

from kvexp.clock import Clock
from kvexp.results import journal, load
from kvexp.results.records import RequestRow, Sample
from kvexp.samplers import SamplerGroup
from tests.test_runner import FAST, sim_servers

MAX_TOKENS = 16
ROOT = Path(__file__).resolve().parents[1]


def _sim_counts(port: int) -> tuple[float, float, float]:
    """(generated tokens, requests running, requests waiting) from the sim's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    def value(name: str) -> float:
        m = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        assert m, f"{name} not in /metrics"
        return float(m.group(1))

    return (value("vllm:generation_tokens_total"), value("vllm:num_requests_running"),
            value("vllm:num_requests_waiting"))


def _point_process(run: Path) -> psutil.Process:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "kvexp.point" in cmd and str(run) in " ".join(cmd):
            return p
    raise AssertionError("no point process")


def test_a_point_killed_with_sigkill_keeps_what_it_measured(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvexp", *FAST, "workload.waves=80", "workload.idle_s=0.7",
         "burst_size=2", "workload.ignore_eos=true", f"workload.max_tokens={MAX_TOKENS}",
         f"hydra.run.dir={run}/0"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        point = run / "0" / "point.json"
        while time.monotonic() < deadline:
            meta = json.loads(point.read_text()) if point.exists() else {}
            if meta.get("workload_start") and meta.get("servers"):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the workload never started")
        port = meta["servers"][0]["port"]
        # The sim's own count, between waves (nothing in flight): every token generated
        # belongs to a finished request of exactly MAX_TOKENS tokens (ignore_eos).
        while time.monotonic() < deadline:
            tokens, running, waiting = _sim_counts(port)
            if running == waiting == 0 and tokens >= 3 * 2 * MAX_TOKENS:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no idle gap after three waves")
        assert tokens % MAX_TOKENS == 0
        finished = int(tokens) // MAX_TOKENS
        time.sleep(1.2)
        victim = _point_process(run)
        killed_at = time.time()
        victim.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out[-3000:]
    meta = json.loads(point.read_text())
    assert meta["status"] == "failed"
    assert "killed by SIGKILL" in meta["error"] and "kept" in meta["error"]
    req = pd.read_parquet(run / "0" / "requests.parquet")
    # every request the sim had finished 1.2 s before the kill has its row
    assert req["ok"].sum() >= finished > 0
    assert (req["completion_tokens"][req["ok"]] == MAX_TOKENS).all()
    assert (req["end_time"] <= killed_at).all()
    mem = pd.read_parquet(run / "0" / "memory.parquet")
    assert mem["time"].max() > killed_at - 1.0  # samples up to the last second are kept
    assert not journal.exists(run / "0")  # folded into the Parquet files
    res = load(run)
    assert res.summary.loc[0, "status"] == "failed"
    assert res.summary.loc[0, "requests"] == len(req)
    assert "killed by SIGKILL" in (run / "report" / "summary.md").read_text()
    for _ in range(50):  # its servers die with it (PDEATHSIG)
        if not sim_servers(tmp_path):
            break
        time.sleep(0.2)
    assert not sim_servers(tmp_path)


def _row(i: int, end: float) -> RequestRow:
    return RequestRow(request_id=i, instance="a", wave=0, api="chat", scheduled_time=end - 1,
                      sent_time=end - 1, send_lag_s=0.0, end_time=end, e2e_s=1.0, ttft_s=0.1,
                      completion_tokens=8, max_tokens=8, status=200, ok=True)


def test_journals_are_on_disk_within_a_second_and_a_cut_last_line_is_skipped(
        tmp_path: Path) -> None:
    j = journal.Journal(tmp_path, flush_s=0.2)
    j.row(_row(0, 10.0))
    j.samples([Sample(10.0, "sim_device", "", "device_used_bytes", 2.0**30)])
    time.sleep(0.6)  # no close: as if the process were killed now
    assert len(journal.read_rows(tmp_path)) == 1
    assert journal.read_samples(tmp_path)[0].value == 2.0**30
    j.close()
    with open(tmp_path / journal.REQUESTS, "a") as f:
        f.write('{"request_id": 1, "instance": "a", "wa')  # the kill came mid-line
    assert [r.request_id for r in journal.read_rows(tmp_path)] == [0]


def test_a_point_whose_journals_nobody_folded_is_read_from_them(tmp_path: Path) -> None:
    # Point and sweep both killed: point.json still says running, no Parquet file.
    point = tmp_path / "0"
    point.mkdir()
    (point / "point.json").write_text(json.dumps(
        {"point": "0", "label": "burst_size=2", "status": "running", "engine": "sim",
         "clock_start": 0.0, "ready_time": 1.0, "workload_start": 2.0}))
    j = journal.Journal(point)
    for i in range(3):
        j.row(_row(i, 3.0 + i))
    j.samples([Sample(t, "sim_device", "", "device_used_bytes", 2.0**30) for t in (1.5, 4.0)])
    j.close()
    res = load(tmp_path)
    assert len(res.requests) == 3 and set(res.requests["engine"]) == {"sim"}
    assert len(res.memory) == 2
    row = res.summary.iloc[0]
    assert row["status"] == "running" and "unfinished" in row["error"]
    assert row["requests"] == 3 and row["peak_device_gib"] == 1.0


class _Ticks:
    source, interval_s = "fake", 0.02

    def sample(self, now: float) -> list[Sample]:
        return [Sample(now, self.source, "", "x", 1.0)]

    def close(self) -> None:
        pass


def test_the_sampler_group_hands_every_tick_to_its_sink() -> None:
    seen: list[Sample] = []
    group = SamplerGroup([_Ticks()], Clock(), sink=seen.extend)
    with group:
        time.sleep(0.2)
    assert seen and seen == group.samples()


def test_a_killed_point_on_a_full_disk_keeps_its_journals_for_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import kvexp.__main__  # noqa: F401 - registers the schemas and resolvers
    from kvexp.config import to_config
    from kvexp.results import fold

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = to_config(compose("config", overrides=["engine=sim", "model=tiny"]))
    GlobalHydra.instance().clear()
    point = tmp_path / "0"
    point.mkdir()
    meta = {"point": "0", "label": "defaults", "status": "running", "engine": "sim",
            "clock_start": 0.0, "workload_start": 2.0}
    j = journal.Journal(point)
    j.row(_row(0, 3.0))
    j.close()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fold, "write_point", full)
    meta = fold.salvage(cfg, point, meta, -signal.SIGKILL)
    assert meta["status"] == "failed" and "killed by SIGKILL" in meta["error"]
    assert "could not be written" in meta["error"] and "No space left" in meta["error"]
    assert journal.exists(point)  # nothing lost: the report reads the journals
    res = load(tmp_path)
    assert len(res.requests) == 1
    assert res.summary.iloc[0]["status"] == "failed"
