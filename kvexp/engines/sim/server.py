"""The sim's HTTP server: vLLM's OpenAI subset, /health and Prometheus /metrics.

Every response carries `x-kvexp-engine: sim`; completions carry
`"system_fingerprint": "kvexp-sim"`; /metrics starts with a comment saying so.
Requests are checked as vLLM checks them (requests.py); `n` choices, batched prompts
(choice index = prompt x n + j) and logprobs are served, the logprobs simulated and
marked `"kvexp_simulated": true`. /health is 503 once the engine's step loop died.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvexp.engines.sim.engine import EngineDead, PromptTooLong, Sequence, SimEngine
from kvexp.engines.sim.faults import GARBAGE, Fault
from kvexp.engines.sim.requests import Parsed, RequestError, logprobs_body, parse

FINGERPRINT = "kvexp-sim"


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
        """200, or 503 once the engine's step loop has died (as vLLM's dead engine)."""
        if self.engine.failure is not None:
            return _error(503, f"engine dead: {self.engine.failure!r}", "ServiceUnavailableError")
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

    async def _complete(self, request: Request, chat: bool) -> Response:
        self.fault.on_request()
        if self.fault.hangs:
            await self.fault.hang_forever()
        if self.engine.failure is not None:
            return _error(503, "the engine is dead (simulated)", "ServiceUnavailableError")
        try:
            body = await request.json()
        except ValueError as e:
            return _error(400, f"invalid request body: {e}", "BadRequestError")
        model = (body.get("model") if isinstance(body, dict) else None) or self.served_model
        if model != self.served_model:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        try:
            req = parse(body, chat, self.engine.model.vocab_size)
            seqs: list[Sequence] = []
            try:
                for prompt in req.prompts:
                    seqs += [
                        self.engine.submit(prompt, req.max_tokens, req.ignore_eos)
                        for _ in range(req.n)
                    ]
            except BaseException:
                for seq in seqs:
                    self.engine.abort(seq)
                raise
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except EngineDead as e:
            return _error(503, str(e), "ServiceUnavailableError")
        except ValueError as e:  # PromptTooLong included
            kind = "BadRequestError" if isinstance(e, PromptTooLong) else "ValueError"
            return _error(400, str(e), kind)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if not req.stream:
            return await self._respond(seqs, req, rid, chat)
        return StreamingResponse(self._stream(seqs, req, rid, chat), media_type="text/event-stream")

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
    def _choice(
        chat: bool, index: int, text: str | None, finish: str | None, role: bool = False
    ) -> dict:
        if chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "index": index,
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

    async def _merged(self, seqs: list[Sequence]) -> AsyncIterator[tuple[int, str | None, str]]:
        """(choice index, text or None at the end, finish reason) of every sequence."""
        queue: asyncio.Queue[tuple[int, str | None, str]] = asyncio.Queue()

        async def pump(i: int, seq: Sequence) -> None:
            async for text, finish in self._tokens(seq):
                await queue.put((i, text, finish or ""))
            await queue.put((i, None, seq.finish_reason or "abort"))

        tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(seqs)]
        try:
            for _ in range(len(seqs)):
                while (item := await queue.get())[1] is not None:
                    yield item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            for seq in seqs:
                self.engine.abort(seq)

    def _logprobs(
        self, seq: Sequence, chat: bool, top: int, texts: list[str], start: int = 0
    ) -> dict:
        """Simulated logprobs of `texts` (tokens `start`...), repeatable per token."""
        return logprobs_body(f"{self.engine.seed}:{seq.seq_id}", chat, top, texts, start)

    def _usage(self, seqs: list[Sequence], req: Parsed, outputs: list[int]) -> dict[str, int]:
        prompt = sum(seqs[i].prompt_tokens for i in range(0, len(seqs), req.n))
        completion = sum(outputs)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _stream(
        self, seqs: list[Sequence], req: Parsed, rid: str, chat: bool
    ) -> AsyncIterator[str]:
        outputs = [0] * len(seqs)
        ended: set[int] = set()  # choices whose last token carried the finish reason
        if chat:
            for i in range(len(seqs)):
                chunk = self._chunk(rid, chat, [self._choice(chat, i, "", None, role=True)])
                if req.continuous:
                    chunk["usage"] = self._usage(seqs, req, outputs)
                yield _sse(chunk)
        async for i, text, finish in self._merged(seqs):
            if text is None and i in ended:
                continue
            if text is not None:
                if self.fault.hangs:
                    await self.fault.hang_forever()
                if self.fault.garbles:
                    yield GARBAGE
                outputs[i] += 1
                if finish:
                    ended.add(i)
            choice = self._choice(chat, i, text, finish or None)
            if text is not None and req.logprobs is not None:
                choice["logprobs"] = self._logprobs(
                    seqs[i], chat, req.logprobs, [text], outputs[i] - 1
                )
            chunk = self._chunk(rid, chat, [choice])
            if req.continuous:
                chunk["usage"] = self._usage(seqs, req, outputs)
            yield _sse(chunk)
        if self.engine.failure is not None:  # as vLLM: an error event, then [DONE]
            error = {"message": f"engine dead: {self.engine.failure!r}", "code": 500}
            yield _sse({"error": {**error, "type": "InternalServerError", "param": None}})
        if req.include_usage:
            final = self._chunk(rid, chat, [])
            final["usage"] = self._usage(seqs, req, outputs)
            yield _sse(final)
        yield "data: [DONE]\n\n"

    async def _respond(self, seqs: list[Sequence], req: Parsed, rid: str, chat: bool) -> Response:
        texts: list[list[str]] = [[] for _ in seqs]
        async for i, text, _ in self._merged(seqs):
            if text is not None:
                texts[i].append(text)
        if self.engine.failure is not None:  # the engine died under the request
            return _error(500, f"engine dead: {self.engine.failure!r}", "InternalServerError")
        choices = []
        for i, (seq, parts) in enumerate(zip(seqs, texts, strict=True)):
            text = "".join(parts)
            if chat:
                choice = {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": seq.finish_reason,
                }
            else:
                choice = self._choice(chat, i, text, seq.finish_reason)
            if req.logprobs is not None:
                choice["logprobs"] = self._logprobs(seq, chat, req.logprobs, parts)
            choices.append(choice)
        body = self._chunk(rid, chat, choices)
        body["object"] = "chat.completion" if chat else "text_completion"
        body["usage"] = self._usage(seqs, req, [len(p) for p in texts])
        return JSONResponse(body)
