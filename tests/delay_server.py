"""An OpenAI-compatible streaming test server whose timing and failures are known.

Behaviour comes from the server's defaults, overridden per request by `[key=value ...]`
in the prompt text, e.g. "hello [ttft=0.2 itl=0.01 n=8 tpe=2]" or "[fail=500]".

Keys: ttft (s), itl (s between content events), n (tokens generated unless max_tokens is
smaller; with ignore_eos, exactly max_tokens), tpe (tokens per event), usage (0/1: usage
on every chunk; default: as the request's stream_options.continuous_usage_stats), fail,
after (content events before a mid-stream failure).
fail: a status code (e.g. 500: JSON error body), close (drop the connection mid-stream),
hang (never answer), malformed (a bad SSE line), error (an error object in the stream),
nodone (end the stream without [DONE]).

The server is plain asyncio HTTP/1.1 (keep-alive, chunked encoding), so its own overhead
stays small next to the driver's. Streams look like vLLM 0.2x's: content chunks every itl
after ttft (chat: a role chunk just before the first, as vLLM sends it with its first
output), finish_reason on the last content chunk, a usage-only chunk, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

_DIRECTIVES = re.compile(r"\[([^\[\]]*=[^\[\]]*)\]")
_KEYS = {
    "ttft": ("ttft_s", float),
    "itl": ("itl_s", float),
    "n": ("tokens", int),
    "tpe": ("tokens_per_event", int),
    "usage": ("usage", lambda v: v not in ("0", "false")),
    "fail": ("fail", str),
    "after": ("fail_after", int),
}


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one request."""

    ttft_s: float = 0.05
    itl_s: float = 0.01
    tokens: int = 16
    tokens_per_event: int = 1
    usage: bool | None = None  # None: as the request asks
    fail: str = ""
    fail_after: int = 2


def behaviour_for(text: str, base: Behaviour) -> Behaviour:
    """`base` with the `[key=value ...]` directives found in `text` applied."""
    changes: dict[str, Any] = {}
    for group in _DIRECTIVES.findall(text):
        for item in group.split():
            key, _, value = item.partition("=")
            if key in _KEYS:
                name, conv = _KEYS[key]
                changes[name] = conv(value)
    return replace(base, **changes)


@dataclass
class Received:
    """One request as the server saw it."""

    time: float  # time.time() when the handler started
    path: str
    body: dict[str, Any] = field(default_factory=dict)


class DelayServer:
    """The test server: plain asyncio HTTP/1.1 (keep-alive, chunked SSE) in a background thread."""

    def __init__(self, behaviour: Behaviour | None = None, host: str = "127.0.0.1") -> None:
        self.behaviour = behaviour or Behaviour()
        self.host = host
        self.port = 0
        self.received: list[Received] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DelayServer:
        self._thread.start()
        listen = asyncio.start_server(self._connection, self.host, 0, backlog=4096)
        self._server = asyncio.run_coroutine_threadsafe(listen, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> DelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; False when the connection is to be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        t0 = time.perf_counter()
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        fields = (x.partition(":") for x in lines[1:])
        headers = {k.strip().lower(): v.strip() for k, _, v in fields}
        raw = await reader.readexactly(int(headers.get("content-length", 0)))
        if method == "GET":
            writer.write(_response(200, b"", "text/plain"))
            return True
        if path not in ("/v1/chat/completions", "/v1/completions"):
            writer.write(_response(404, b'{"error": {"message": "not found"}}'))
            return True
        body = json.loads(raw)
        self.received.append(Received(time.time(), path, body))
        chat = path == "/v1/chat/completions"
        if chat:
            text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
            prompt_tokens = len(text.split())
        else:
            prompt = body.get("prompt", "")
            text = prompt if isinstance(prompt, str) else ""
            prompt_tokens = len(prompt.split()) if isinstance(prompt, str) else len(prompt)
        b = behaviour_for(text, self.behaviour)
        if b.usage is None:
            options = body.get("stream_options") or {}
            b = replace(b, usage=bool(options.get("continuous_usage_stats")))
        if b.fail.isdigit():
            err = {"message": f"injected failure {b.fail}", "type": "TestError", "code": b.fail}
            writer.write(_response(int(b.fail), json.dumps({"error": err}).encode()))
            return True
        if b.fail == "hang":
            await reader.read()  # until the client gives up
            return False
        max_tokens = int(body.get("max_tokens") or 16)
        n = max_tokens if body.get("ignore_eos") else min(max_tokens, b.tokens)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        try:
            async for ev in self._stream(b, t0, chat, n, prompt_tokens, str(body.get("model"))):
                data = ev.encode()
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
        except ConnectionAbortedError:
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _stream(
        self, b: Behaviour, t0: float, chat: bool, n: int, prompt_tokens: int, model: str
    ) -> AsyncIterator[str]:
        rid = f"cmpl-{int(t0 * 1e6)}"
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], done_tokens: int | None) -> str:
            obj: dict[str, Any] = {
                "id": rid, "object": kind, "created": int(time.time()), "model": model,
                "choices": choices,
            }
            if done_tokens is not None:
                obj["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": done_tokens,
                    "total_tokens": prompt_tokens + done_tokens,
                }
            return f"data: {json.dumps(obj)}\n\n"

        def choice(text: str, finish: str | None = None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta = {"role": "assistant", "content": text} if role else {"content": text}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        usage = (lambda k: k) if b.usage else (lambda k: None)
        done, k = 0, 0
        while done < n:
            await _sleep_until(t0 + b.ttft_s + k * b.itl_s)
            if chat and k == 0:
                yield event([choice("", role=True)], usage(0))
            if k == b.fail_after and b.fail in ("close", "malformed", "error"):
                if b.fail == "close":
                    raise ConnectionAbortedError("injected: connection dropped mid-stream")
                if b.fail == "malformed":
                    yield "data: {this is not json\n\n"
                else:
                    err = {"message": "injected error in stream", "type": "TestError", "code": 500}
                    yield f"data: {json.dumps({'error': err})}\n\n"
                    yield "data: [DONE]\n\n"
                return
            step = min(b.tokens_per_event, n - done)
            text = "".join(f"tok{done + j} " for j in range(step))
            done += step
            k += 1
            yield event([choice(text, finish="length" if done >= n else None)], usage(done))
        yield event([], done)
        if b.fail != "nodone":
            yield "data: [DONE]\n\n"


def _response(status: int, body: bytes, ctype: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
