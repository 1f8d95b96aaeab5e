"""The sim server end to end: launched as the runner would, spoken to over HTTP, stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kvexp.config import AllocatorConfig, EngineConfig, ModelConfig, ResolvedInstance
from kvexp.engines.sim.device import SimDevice
from kvexp.engines.sim.launch import build_sim_launch, load_spec
from kvexp.kvcached_segment import read_segment, segment_path

MODEL = ModelConfig(
    name="toy",
    hub_id="kvexp/toy",
    num_layers=2,
    num_attention_heads=4,
    num_kv_heads=2,
    head_dim=16,
    hidden_size=64,
    intermediate_size=128,
    vocab_size=1000,
    max_model_len=256,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, tmp: Path, ipc: str) -> None:
        self.proc, self.base, self.tmp, self.ipc = proc, base, tmp, ipc

    def log(self) -> str:
        return (self.tmp / "server.log").read_text()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    engine = EngineConfig(kind="sim")
    engine.sim.gpu = "tiny"
    engine.sim.time_scale = 0.01
    inst = ResolvedInstance("a", MODEL, AllocatorConfig(kind="kvcached"))
    port = free_port()
    launch = build_sim_launch(inst, engine, tmp_path, port, tmp_path / "dev.json", "kvexp-t", 3)
    assert launch.ipc_name == "kvexp-t" and launch.served_model == "kvexp/toy"
    assert load_spec(tmp_path / "sim-a.json").allocator.kind == "kvcached"
    env = {**os.environ, **launch.env, "KVEXP_SHM_DIR": str(tmp_path)}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(launch.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = Server(proc, f"http://127.0.0.1:{port}", tmp_path, "kvexp-t")
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, srv.log()
        try:
            if httpx.get(srv.base + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    yield srv
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def sse_events(resp: httpx.Response) -> list[dict]:
    """Parse an SSE body strictly: `data: ...` lines, each followed by a blank line."""
    body = resp.read().decode()
    blocks = body.split("\n\n")
    assert blocks[-1] == "", "the stream must end with a blank line"
    assert blocks[-2] == "data: [DONE]"
    events = []
    for block in blocks[:-2]:
        assert block.startswith("data: ") and "\n" not in block, block
        events.append(json.loads(block[len("data: ") :]))
    return events


def stream(srv: Server, path: str, payload: dict) -> tuple[httpx.Response, list[dict]]:
    with httpx.stream("POST", srv.base + path, json=payload, timeout=30) as resp:
        return resp, sse_events(resp)


USAGE = {"include_usage": True, "continuous_usage_stats": True}


def test_chat_stream(server: Server) -> None:
    payload = {
        "model": "kvexp/toy",
        "messages": [{"role": "user", "content": "three words here"}],
        "max_tokens": 12,
        "ignore_eos": True,
        "stream": True,
        "stream_options": USAGE,
    }
    resp, events = stream(server, "/v1/chat/completions", payload)
    assert resp.status_code == 200 and resp.headers["x-kvexp-engine"] == "sim"
    assert resp.headers["content-type"].startswith("text/event-stream")
    *chunks, final = events
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 12
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["system_fingerprint"] == "kvexp-sim" for c in events)
    content = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(content) == 12  # one token an event
    assert [c["usage"]["completion_tokens"] for c in content] == list(range(1, 13))
    prompt = final["usage"]["prompt_tokens"]
    assert prompt > 4 and all(c["usage"]["prompt_tokens"] == prompt for c in chunks)
    assert final["usage"]["total_tokens"] == prompt + 12
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completions_stream_and_non_stream(server: Server) -> None:
    payload = {
        "model": "kvexp/toy",
        "prompt": list(range(40)),
        "max_tokens": 8,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp, events = stream(server, "/v1/completions", payload)
    *chunks, final = events
    assert len(chunks) == 8 and all(c["object"] == "text_completion" for c in chunks)
    assert all(c["choices"][0]["text"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert final["usage"] == {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
    plain = httpx.post(
        server.base + "/v1/completions",
        json={"model": "kvexp/toy", "prompt": "hello there", "max_tokens": 5, "ignore_eos": True},
        timeout=30,
    ).json()
    assert plain["usage"]["completion_tokens"] == 5 and plain["choices"][0]["text"]


def test_errors_like_vllm(server: Server) -> None:
    wrong = httpx.post(
        server.base + "/v1/completions", json={"model": "other", "prompt": "hi"}, timeout=10
    )
    assert wrong.status_code == 404 and "does not exist" in wrong.json()["error"]["message"]
    long = httpx.post(
        server.base + "/v1/completions",
        json={"model": "kvexp/toy", "prompt": list(range(300)), "max_tokens": 4},
        timeout=10,
    )
    assert long.status_code == 400 and "maximum context length" in long.json()["error"]["message"]


def test_models_metrics_health_and_sigterm(server: Server) -> None:
    assert httpx.get(server.base + "/health").status_code == 200
    models = httpx.get(server.base + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["kvexp/toy"]
    text = httpx.get(server.base + "/metrics").text
    for name in (
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:num_preemptions_total",
    ):
        assert f'{name}{{model_name="kvexp/toy"}} ' in text, name
    assert 'vllm:cache_config_info{model_name="kvexp/toy",block_size="16",num_gpu_blocks="' in text
    assert "simulated" in text
    seg = read_segment(server.ipc, server.tmp)
    assert seg is not None and seg.limit_bytes > 0 and seg.held_bytes > 0
    device = SimDevice(server.tmp / "dev.json")
    assert device.snapshot().processes.keys() == {server.proc.pid}
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0, server.log()
    assert not segment_path(server.ipc, server.tmp).exists()
    snap = device.snapshot()
    assert snap.instances == {} and snap.used_bytes == device.gpu.base_bytes
    assert json.loads((server.tmp / "dev.json").read_text())["instances"] == {}
    assert "kvexp sim engine (simulated, not a real GPU)" in server.log()
