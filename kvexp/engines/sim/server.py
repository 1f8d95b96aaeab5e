"""The sim's HTTP server: vLLM's OpenAI subset, /health and Prometheus /metrics.

Every response carries `x-kvexp-engine: sim`; completions carry
`"system_fingerprint": "kvexp-sim"`; /metrics starts with a comment saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvexp.engines.sim.device import SimDevice
from kvexp.engines.sim.engine import PromptTooLong, Sequence, SimEngine, chat_tokens, text_tokens
from kvexp.engines.sim.faults import GARBAGE, Fault
from kvexp.engines.sim.gpus import MiB, get_gpu
from kvexp.engines.sim.launch import SimSpec
from kvexp.engines.sim.memory import ElasticPool, KvPool, StaticPool, activation_bytes

log = logging.getLogger("kvexp.sim")
FINGERPRINT = "kvexp-sim"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's (and OpenAI's) default for /v1/completions


class SimHeader:
    """ASGI middleware: mark every HTTP response as coming from the sim."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                message["headers"] = [*headers, (b"x-kvexp-engine", b"sim")]
            await send(message)

        await self.app(scope, receive, send_marked if scope["type"] == "http" else send)


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def _usage(seq: Sequence, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": seq.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": seq.prompt_tokens + completion_tokens,
    }


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class SimApi:
    """Request handling for one engine and its served model name."""

    def __init__(self, engine: SimEngine, served_model: str, fault: Fault | None = None) -> None:
        self.fault = fault or Fault("none", 0.0)
        self.engine = engine
        self.served_model = served_model
        self.created = int(time.time())

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(SimHeader)])

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def models(self, request: Request) -> Response:
        card = {
            "id": self.served_model,
            "object": "model",
            "created": self.created,
            "owned_by": FINGERPRINT,
            "root": self.served_model,
            "max_model_len": self.engine.model.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def metrics(self, request: Request) -> Response:
        s = self.engine.stats()
        model = f'model_name="{_label(self.served_model)}"'
        cache = f'{model},block_size="{s.block_size}",num_gpu_blocks="{s.num_gpu_blocks}"'
        rows = [
            ("vllm:num_requests_running", "gauge", "Requests in the batch.", model, s.running),
            ("vllm:num_requests_waiting", "gauge", "Requests waiting.", model, s.waiting),
            ("vllm:kv_cache_usage_perc", "gauge", "KV cache usage (1 = 100%).", model, s.kv_usage),
            ("vllm:num_preemptions", "counter", "Preemptions.", model, s.preemptions),
            ("vllm:prompt_tokens", "counter", "Prefill tokens.", model, s.prompt_tokens_total),
            (
                "vllm:generation_tokens",
                "counter",
                "Generated tokens.",
                model,
                s.generation_tokens_total,
            ),
            ("vllm:cache_config_info", "gauge", "Cache config.", cache, 1),
        ]
        lines = ["# kvexp sim engine (simulated, not a real GPU)"]
        for name, kind, help_, labels, value in rows:
            sample = f"{name}_total" if kind == "counter" else name
            lines += [
                f"# HELP {name} {help_}",
                f"# TYPE {name} {kind}",
                f"{sample}{{{labels}}} {float(value)}",
            ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    def _prompt_tokens(self, body: dict[str, Any], chat: bool) -> int:
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ValueError("'messages' must be a non-empty list")
            return chat_tokens(messages)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            return text_tokens(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        raise ValueError("'prompt' must be a string or a list of token ids (one prompt)")

    async def _complete(self, request: Request, chat: bool) -> Response:
        self.fault.on_request()
        if self.fault.hangs:
            await self.fault.hang_forever()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return _error(400, f"invalid request body: {e}", "BadRequestError")
        model = body.get("model") or self.served_model
        if model != self.served_model:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        max_tokens = body.get("max_tokens")
        if chat and max_tokens is None:
            max_tokens = body.get("max_completion_tokens")
        if not chat and max_tokens is None:
            max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
        try:
            prompt = self._prompt_tokens(body, chat)
            if max_tokens is not None:
                max_tokens = int(max_tokens)
            seq = self.engine.submit(prompt, max_tokens, bool(body.get("ignore_eos", False)))
        except (ValueError, TypeError) as e:  # PromptTooLong included
            kind = "BadRequestError" if isinstance(e, PromptTooLong) else "ValueError"
            return _error(400, str(e), kind)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if not body.get("stream"):
            return await self._respond(seq, rid, chat)
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
        return StreamingResponse(
            self._stream(seq, rid, chat, include_usage, continuous),
            media_type="text/event-stream",
        )

    def _chunk(self, rid: str, chat: bool, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.served_model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }

    @staticmethod
    def _choice(chat: bool, text: str | None, finish: str | None, role: bool = False) -> dict:
        if chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "index": 0,
            "text": text or "",
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
        }

    async def _tokens(self, seq: Sequence) -> AsyncIterator[tuple[str, str | None]]:
        """(text, finish reason if this is the last token) for each token; aborts on exit."""
        n = 0
        try:
            while (text := await seq.events.get()) is not None:
                n += 1
                last = seq.finish_reason is not None and n == seq.output_tokens
                yield text, seq.finish_reason if last else None
        finally:
            self.engine.abort(seq)

    async def _stream(
        self, seq: Sequence, rid: str, chat: bool, include_usage: bool, continuous: bool
    ) -> AsyncIterator[str]:
        n = 0
        finished = False
        if chat:
            chunk = self._chunk(rid, chat, [self._choice(chat, "", None, role=True)])
            if continuous:
                chunk["usage"] = _usage(seq, 0)
            yield _sse(chunk)
        async for text, finish in self._tokens(seq):
            if self.fault.hangs:
                await self.fault.hang_forever()
            if self.fault.garbles:
                yield GARBAGE
            n += 1
            finished = finish is not None
            chunk = self._chunk(rid, chat, [self._choice(chat, text, finish)])
            if continuous:
                chunk["usage"] = _usage(seq, n)
            yield _sse(chunk)
        if not finished:
            chunk = self._chunk(rid, chat, [self._choice(chat, None, seq.finish_reason)])
            if continuous:
                chunk["usage"] = _usage(seq, n)
            yield _sse(chunk)
        if include_usage:
            final = self._chunk(rid, chat, [])
            final["usage"] = _usage(seq, n)
            yield _sse(final)
        yield "data: [DONE]\n\n"

    async def _respond(self, seq: Sequence, rid: str, chat: bool) -> Response:
        parts = [text async for text, _ in self._tokens(seq)]
        text = "".join(parts)
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": seq.finish_reason,
            }
        else:
            choice = self._choice(chat, text, seq.finish_reason)
        body = self._chunk(rid, chat, [choice])
        body["object"] = "chat.completion" if chat else "text_completion"
        body["usage"] = _usage(seq, len(parts))
        return JSONResponse(body)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `run()` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _make_pool(spec: SimSpec, device: SimDevice, activation: int) -> KvPool:
    args = (device, spec.name, spec.model, spec.allocator, spec.sim.block_size, activation)
    if spec.allocator.kind == "kvcached":
        if not spec.ipc_name:
            raise ValueError("a kvcached (elastic) sim instance needs an ipc_name")
        return ElasticPool(*args, ipc_name=spec.ipc_name)
    if spec.allocator.kind == "static":
        return StaticPool(*args)
    raise ValueError(f"unknown allocator kind {spec.allocator.kind!r} (kvcached | static)")


async def run(spec: SimSpec) -> None:
    """Start one sim instance, serve until SIGTERM/SIGINT, then give its memory back."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server: _Server | None = None

    def on_signal() -> None:
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    gpu = get_gpu(spec.sim.gpu)
    device = SimDevice(spec.device_path, gpu)
    activation = activation_bytes(spec.model, spec.sim.max_batch)
    device.register(spec.name, os.getpid(), gpu.context_bytes, spec.model.weight_bytes, activation)
    pool: KvPool | None = None
    engine: SimEngine | None = None
    try:
        pool = _make_pool(spec, device, activation)
        log.info(
            "kvexp sim engine (simulated, not a real GPU): instance %s serving %s on a simulated "
            "%s (%s MiB); %s KV pool of %d blocks x %d tokens, holding %s MiB; weights %s MiB, "
            "activations %s MiB, context %s MiB",
            spec.name,
            spec.served_model,
            gpu.name,
            f"{gpu.total_bytes // MiB:,}",
            spec.allocator.kind,
            pool.capacity_blocks,
            pool.block_size,
            f"{pool.held_bytes // MiB:,}",
            f"{spec.model.weight_bytes // MiB:,}",
            f"{activation // MiB:,}",
            f"{gpu.context_bytes // MiB:,}",
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), spec.sim.startup_s * spec.sim.time_scale)
        if stop.is_set():
            return
        fault = Fault(spec.sim.fault, spec.sim.fault_after_s * spec.sim.time_scale)
        engine = SimEngine(spec.model, spec.sim, gpu, pool, seed=spec.seed)
        engine.start()
        config = uvicorn.Config(
            SimApi(engine, spec.served_model, fault).app(),
            host=spec.host,
            port=spec.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        log.info("kvexp sim engine (simulated): serving on http://%s:%d", spec.host, spec.port)
        await server.serve()
    finally:
        if engine is not None:
            await engine.stop()
        if pool is not None:
            pool.close()
        device.unregister(spec.name)
        log.info("kvexp sim engine (simulated): instance %s stopped, memory released", spec.name)
