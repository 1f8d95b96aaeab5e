"""engine=external: kvexp measures servers someone else started, and says what it lacks.

    python -m kvexp engine=external model=tiny 'engine.options.urls=[http://127.0.0.1:8000]'
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kvexp.config import AllocatorConfig, EngineConfig, ResolvedInstance
from kvexp.engines.base import LaunchSpec
from kvexp.engines.servers import Server, wait_ready
from tests.conftest import model_from_conf

FAST = ["workload.waves=2", "workload.idle_s=0.3", "workload.max_tokens=12",
        "workload.lead_in_s=0.5", "workload.tail_s=0.6", "sampler.interval_s=0.05",
        "burst_size=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_by_hand(spec: LaunchSpec, tmp: Path, env: dict[str, str]) -> Server:
    """The server as a user would run it: its own process, outside any kvexp run."""
    server = Server(LaunchSpec(**{**spec.__dict__, "env": {**spec.env, **env}}),
                    tmp / "by-hand.log")
    server.start()
    wait_ready([server], 300)
    return server


def _run_kvexp(tmp: Path, env: dict[str, str], *overrides: str) -> tuple[int, str, Path]:
    run = tmp / "run"
    r = subprocess.run([sys.executable, "-m", "kvexp", "engine=external", *overrides,
                        f"hydra.run.dir={run}"], env={**os.environ, **env}, text=True,
                       capture_output=True, timeout=600)
    return r.returncode, r.stdout + r.stderr, run


def test_external_sim_server_started_by_hand(tmp_path: Path) -> None:
    engine = EngineConfig(kind="sim")
    engine.sim.gpu, engine.sim.time_scale, engine.sim.startup_s = "tiny", 0.2, 0.0
    from kvexp.engines.sim.launch import build_sim_launch

    ipc = f"kvexp_ext_{secrets.token_hex(3)}"
    inst = ResolvedInstance("a", model_from_conf("tiny"), AllocatorConfig(kind="kvcached"))
    spec = build_sim_launch(inst, engine, tmp_path, _free_port(), tmp_path / "dev.json", ipc, 0)
    shm = {"KVEXP_SHM_DIR": str(tmp_path)}
    server = _start_by_hand(spec, tmp_path, shm)
    try:
        rc, out, run = _run_kvexp(
            tmp_path, shm, "model=tiny", "allocator=kvcached", *FAST,
            f"engine.options.urls=[http://127.0.0.1:{spec.port}]",
            f"engine.options.models=[{spec.served_model}]", f"engine.options.ipc_names=[{ipc}]")
        assert rc == 0, out[-3000:]
        assert server.exit_code() is None  # nothing was stopped
        assert (tmp_path / ipc).exists()  # nor its kvcached segment removed
    finally:
        server.stop(10)
    meta = json.loads((run / "point.json").read_text())
    assert meta["status"] == "ok" and meta["engine"] == "external"
    assert set(meta["lacking_signals"]) == {"device", "processes"}
    assert "not measured: " in out and "no local GPU" in out
    assert meta["servers"][0]["argv"] == []  # started by no one here
    req = pd.read_parquet(run / "requests.parquet")
    assert len(req) == 4 and req["ok"].all()
    mem = pd.read_parquet(run / "memory.parquet")
    assert {"kvcached", "engine"} <= set(mem["source"])
    assert "process" not in set(mem["source"])


def test_external_refuses_bad_options_naming_the_key(tmp_path: Path) -> None:
    rc, out, _ = _run_kvexp(tmp_path, {}, "model=tiny", "allocator=static",
                            "engine.options.urls=[http://127.0.0.1:9,http://127.0.0.1:10]",
                            "+engine.options.ipc_name=x")
    assert rc == 2, out[-2000:]
    assert "engine.options.ipc_name is not a setting" in out
    assert "engine.options.urls lists 2 server(s) for 1 instance(s)" in out


@pytest.mark.vllm
@pytest.mark.slow
def test_external_vllm_cpu_server_started_by_hand(tmp_path: Path, vllm_python: str) -> None:
    from kvexp.engines.vllm.launch import build_vllm_launch

    engine = EngineConfig(kind="vllm")
    engine.vllm.python, engine.vllm.device = vllm_python, "cpu"
    inst = ResolvedInstance("cpu0", model_from_conf("tiny"), AllocatorConfig(kind="static"))
    spec = build_vllm_launch(inst, engine, tmp_path / "models", _free_port(), None)
    server = _start_by_hand(spec, tmp_path, {})
    try:
        rc, out, run = _run_kvexp(
            tmp_path, {}, "model=tiny", "allocator=static", "workload=random_tokens",
            "workload.random_input_len=32", *FAST,
            f"engine.options.urls=[http://127.0.0.1:{spec.port}]",
            f"engine.options.models=[{spec.served_model}]")
        assert rc == 0, out[-3000:]
        assert server.exit_code() is None
    finally:
        server.stop(30)
    meta = json.loads((run / "point.json").read_text())
    assert meta["status"] == "ok"
    assert set(meta["lacking_signals"]) == {"device", "processes", "kvcached"}
    req = pd.read_parquet(run / "requests.parquet")
    assert len(req) == 4 and req["ok"].all() and (req["completion_tokens"] == 12).all()
    mem = pd.read_parquet(run / "memory.parquet")
    assert {"kv_cache_usage", "num_requests_running"} <= set(
        mem[mem["source"] == "engine"]["metric"])
