"""The sim server end to end: launched as the runner would, spoken to over HTTP, stopped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kvexp.config import (
    AllocatorConfig,
    EngineConfig,
    ModelConfig,
    ResolvedInstance,
    SimEngineConfig,
)
from kvexp.engines.sim.device import SimDevice
from kvexp.engines.sim.engine import SimEngine
from kvexp.engines.sim.footprint import activation_bytes, kv_budget_bytes
from kvexp.engines.sim.gpus import get_gpu
from kvexp.engines.sim.launch import build_sim_launch, load_spec
from kvexp.engines.sim.memory import StaticPool
from kvexp.engines.sim.server import SimApi
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


def start_server(tmp_path: Path, allocator: str = "kvcached", **sim: object) -> Server:
    """A sim server launched as the runner launches one; `sim` overrides engine.sim."""
    engine = EngineConfig(kind="sim")
    engine.sim.gpu = "tiny"
    engine.sim.time_scale = 0.01
    for key, value in sim.items():
        setattr(engine.sim, key, value)
    inst = ResolvedInstance("a", MODEL, AllocatorConfig(kind=allocator))
    port = free_port()
    launch = build_sim_launch(inst, engine, tmp_path, port, tmp_path / "dev.json", "kvexp-t", 3)
    assert launch.served_model == "kvexp/toy"
    assert load_spec(tmp_path / "sim-a.json").allocator.kind == allocator
    env = {**os.environ, **launch.env, "KVEXP_SHM_DIR": str(tmp_path)}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(launch.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = Server(proc, f"http://127.0.0.1:{port}", tmp_path, "kvexp-t")
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, srv.log()
        try:
            if httpx.get(srv.base + "/health", timeout=1).status_code == 200:
                return srv
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """start_server in tmp_path; every server still running is killed at the end."""
    started: list[Server] = []

    def start(allocator: str = "kvcached", **sim: object) -> Server:
        started.append(start_server(tmp_path, allocator, **sim))
        return started[-1]

    yield start
    for srv in started:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


@pytest.fixture
def server(launch: Callable[..., Server]) -> Server:
    return launch()


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


def post(srv: Server, path: str, payload: dict) -> httpx.Response:
    return httpx.post(srv.base + path, json=payload, timeout=30)


CHAT = {"model": "kvexp/toy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION = {"model": "kvexp/toy", "prompt": "hi there", "max_tokens": 4}


@pytest.mark.parametrize(
    ("path", "change", "kind", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [1, 2]},
            "Bad Request",
            "body.messages.0.ChatCompletionDeveloperMessageParam",
        ),
        ("/v1/chat/completions", {"messages": []}, "BadRequestError", None),
        (
            "/v1/chat/completions",
            {"stream": True, "stream_options": "yes"},
            "Bad Request",
            "body.stream_options",
        ),
        ("/v1/completions", {"max_tokens": 1.5}, "Bad Request", "body.max_tokens"),
        ("/v1/completions", {"max_tokens": "many"}, "Bad Request", "body.max_tokens"),
        ("/v1/chat/completions", {"temperature": -1}, "BadRequestError", "temperature"),
        ("/v1/completions", {"top_p": 0}, "BadRequestError", "top_p"),
        ("/v1/completions", {"prompt": [5, -1, 7]}, "Bad Request", "body.prompt.1"),
        ("/v1/completions", {"prompt": [[1, 2], [MODEL.vocab_size]]}, "BadRequestError", None),
        ("/v1/completions", {"n": 0}, "BadRequestError", None),
        ("/v1/completions", {"n": 2, "temperature": 0}, "BadRequestError", None),
        ("/v1/completions", {"logprobs": -2}, "BadRequestError", "logprobs"),
        ("/v1/chat/completions", {"top_logprobs": 2}, "BadRequestError", "top_logprobs"),
        ("/v1/completions", {"stream": [1]}, "Bad Request", "body.stream"),
    ],
)
def test_bad_requests_get_vllms_400(
    server: Server, path: str, change: dict, kind: str, param: str
) -> None:
    base = CHAT if "chat" in path else COMPLETION
    resp = post(server, path, {**base, **change})
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (kind, param, 400)
    assert error["message"]
    assert post(server, path, base).status_code == 200  # the server goes on serving


def test_lax_values_are_accepted_as_pydantic_accepts_them(server: Server) -> None:
    """vLLM's pydantic models take "yes" for true and "3" for 3 (lax mode)."""
    resp = post(server, "/v1/completions", {**COMPLETION, "max_tokens": "3", "ignore_eos": "yes"})
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 3


def test_cjk_text_counts_about_a_token_a_character(server: Server) -> None:
    resp = post(server, "/v1/completions", {**COMPLETION, "prompt": "\u4e2d" * 100_000})
    assert resp.status_code == 400
    assert "request has 100000 input tokens" in resp.json()["error"]["message"]
    plain = post(server, "/v1/completions", {**COMPLETION, "prompt": "\u4f60\u597d" * 20})
    assert plain.json()["usage"]["prompt_tokens"] == 40


def test_n_logprobs_and_batched_prompts(server: Server) -> None:
    payload = {
        **COMPLETION,
        "prompt": ["one two three", "four"],
        "n": 2,
        "logprobs": 2,
        "ignore_eos": True,
    }
    body = post(server, "/v1/completions", payload).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    for choice in body["choices"]:
        lp = choice["logprobs"]
        assert lp["kvexp_simulated"] is True and len(lp["tokens"]) == 4
        assert "".join(lp["tokens"]) == choice["text"]
        assert all(v <= 0 for v in lp["token_logprobs"])
        assert all(len(top) == 2 for top in lp["top_logprobs"])
    one = post(server, "/v1/completions", {**payload, "prompt": "four", "n": 1}).json()
    three = post(server, "/v1/completions", {**payload, "prompt": "one two three", "n": 1})
    prompts = one["usage"]["prompt_tokens"] + three.json()["usage"]["prompt_tokens"]
    assert body["usage"] == {
        "prompt_tokens": prompts,
        "completion_tokens": 16,
        "total_tokens": prompts + 16,
    }
    ids = post(server, "/v1/completions", {**COMPLETION, "prompt": [[1, 2, 3], [4, 5]]}).json()
    assert len(ids["choices"]) == 2 and ids["usage"]["prompt_tokens"] == 5
    chat = {**CHAT, "n": 3, "logprobs": True, "top_logprobs": 1, "ignore_eos": True}
    reply = post(server, "/v1/chat/completions", chat).json()
    assert len(reply["choices"]) == 3 and reply["usage"]["completion_tokens"] == 12
    content = reply["choices"][2]["logprobs"]["content"]
    assert len(content) == 4 and all(len(c["top_logprobs"]) == 1 for c in content)
    _, events = stream(server, "/v1/chat/completions", {**chat, "stream": True})
    finished = [c["choices"][0]["index"] for c in events if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1, 2]
    tokens = [c for c in events if c["choices"][0]["delta"].get("content")]
    assert len(tokens) == 12 and all(c["choices"][0]["logprobs"]["content"] for c in tokens)


def test_an_engine_task_that_dies_stops_the_server_and_frees_its_memory(
    launch: Callable[..., Server],
) -> None:
    srv = launch(fault="engine_error", fault_after_s=0.0)
    reply = post(srv, "/v1/completions", COMPLETION)  # the first step raises
    assert reply.status_code == 500 and "engine dead" in reply.json()["error"]["message"]
    assert srv.proc.wait(timeout=20) == 1, srv.log()
    assert "the engine task died" in srv.log() and "FAULT INJECTED: engine_error" in srv.log()
    assert "memory released" in srv.log()
    assert json.loads((srv.tmp / "dev.json").read_text())["instances"] == {}
    assert not segment_path(srv.ipc, srv.tmp).exists()


def test_no_kvcached_fault_builds_a_static_pool_and_no_segment(
    launch: Callable[..., Server],
) -> None:
    srv = launch(fault="no_kvcached")
    assert post(srv, "/v1/completions", COMPLETION).status_code == 200
    assert not segment_path(srv.ipc, srv.tmp).exists()
    assert "FAULT INJECTED: no_kvcached" in srv.log()
    state = json.loads((srv.tmp / "dev.json").read_text())
    inst = state["instances"]["a"]
    gpu = get_gpu("tiny")
    activation = activation_bytes(MODEL, SimEngineConfig().max_batch)
    budget = kv_budget_bytes(
        gpu, MODEL, AllocatorConfig(kind="static").gpu_memory_utilization, activation
    )
    block = SimEngineConfig().block_size * MODEL.kv_bytes_per_token
    assert inst["kv_bytes"] == budget // block * block  # the whole static pool, from the start
    assert inst["context_bytes"] == gpu.context_bytes  # no kvcached runtime either


def test_health_is_503_once_the_engine_loop_dies(tmp_path: Path) -> None:
    """In process: a step loop that raises makes /health 503 and calls on_death."""
    device = SimDevice(tmp_path / "dev.json", get_gpu("tiny"))
    device.register("a", os.getpid(), 0, MODEL.weight_bytes, 0)
    pool = StaticPool(device, "a", MODEL, AllocatorConfig(kind="static"), 16, 0)
    sim = SimEngineConfig(gpu="tiny", time_scale=0.001)

    def boom() -> None:
        raise OSError(24, "Too many open files")

    engine = SimEngine(MODEL, sim, get_gpu("tiny"), pool, step_hook=boom)
    deaths: list[BaseException] = []

    async def go() -> tuple[int, int, int]:
        transport = httpx.ASGITransport(app=SimApi(engine, "kvexp/toy").app())
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            engine.start(deaths.append)
            before = (await client.get("/health")).status_code
            seq = engine.submit(10, 4, ignore_eos=True)
            while seq.finish_reason is None:
                await asyncio.sleep(0.001)
            after = await client.get("/health")
            assert after.json()["error"]["type"] == "ServiceUnavailableError"
            refused = await client.post("/v1/completions", json=COMPLETION)
            await engine.stop()  # does not raise the loop's error
            return before, after.status_code, refused.status_code

    assert asyncio.run(go()) == (200, 503, 503)
    assert len(deaths) == 1 and isinstance(engine.failure, OSError)
    pool.close()
