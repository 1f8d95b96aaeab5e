"""A very cheap OpenAI-compatible streaming server, to measure load generators against.

Raw asyncio (a Protocol, no framework), HTTP/1.1 keep-alive, chunked SSE like vLLM's.
POST /v1/completions and /v1/chat/completions answer at once with `max_tokens` short
tokens (or `--tokens`), one SSE event each, usage as the request asks
(`stream_options.include_usage`, `continuous_usage_stats`), then `data: [DONE]`.
With `--itl-ms` the token events are spaced that far apart instead of sent together.

Every generation request is logged: arrival (request head parsed) and end (last byte
written), both `time.monotonic()` (system-wide on Linux, so comparable with another
process's `perf_counter`) plus the arrival in epoch seconds. GET /log returns the log as
JSON and clears it; GET /health and /v1/models answer 200; anything else 404.

    .venv/bin/python benchmarks/fast_server.py [--port 0] [--tokens N] [--itl-ms MS]

prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

GEN_PATHS = (b"/v1/completions", b"/v1/chat/completions")
MAX_TOKENS_CAP = 4096


class Log:
    """Per-request (path, arrival monotonic, arrival epoch, end monotonic), in arrival order."""

    def __init__(self) -> None:
        self.entries: list[list[Any]] = []

    def take(self) -> list[list[Any]]:
        out, self.entries = self.entries, []
        return out


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_body(body: dict[str, Any], chat: bool, tokens: int | None) -> list[bytes]:
    """The SSE events (already chunk-encoded) answering one request."""
    n = tokens if tokens is not None else int(body.get("max_tokens") or 16)
    n = max(1, min(n, MAX_TOKENS_CAP))
    prompt = body.get("prompt") if not chat else body.get("messages")
    prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt or "").split())
    opts = body.get("stream_options") or {}
    include = bool(opts.get("include_usage"))
    continuous = include and bool(opts.get("continuous_usage_stats"))
    base = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": str(body.get("model", "")),
    }

    def event(choices: list[dict[str, Any]], done: int | None) -> bytes:
        obj: dict[str, Any] = {**base, "choices": choices}
        if done is not None:
            obj["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": done,
                            "total_tokens": prompt_tokens + done}
        return _chunk(b"data: %s\n\n" % json.dumps(obj, separators=(",", ":")).encode())

    def choice(text: str, finish: str | None = None) -> list[dict[str, Any]]:
        if chat:
            return [{"index": 0, "delta": {"content": text}, "logprobs": None,
                     "finish_reason": finish}]
        return [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]

    out = []
    if chat:
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        out.append(event([role], 0 if continuous else None))
    for k in range(1, n + 1):
        out.append(event(choice(" tok"), k if continuous else None))
    out.append(event(choice("", "length"), n if continuous else None))
    if include:
        out.append(event([], n))
    out.append(_chunk(b"data: [DONE]\n\n"))
    out.append(b"0\r\n\r\n")
    return out


def _response(status: int, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status, ctype, len(body), body)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; requests on it are answered in order."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a spaced stream is being written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            raw = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._answer(head.split(b" ", 2), raw)

    def _answer(self, request_line: list[bytes], raw: bytes) -> None:
        assert self.transport is not None
        now, wall = time.monotonic(), time.time()
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else b""
        if method == b"POST" and path in GEN_PATHS:
            entry = [path.decode(), now, wall, now]
            self.server.log.entries.append(entry)
            events = sse_body(json.loads(raw), path == GEN_PATHS[1], self.server.tokens)
            if self.server.itl_s > 0:
                self.busy = True
                asyncio.get_running_loop().create_task(self._spaced(events, entry))
                return
            self.transport.write(STREAM_HEAD + b"".join(events))
            entry[3] = time.monotonic()
        elif method == b"GET" and path == b"/log":
            self.transport.write(_response(200, json.dumps(self.server.log.take()).encode()))
        elif method == b"GET" and path in (b"/health", b"/v1/models"):
            models = {"object": "list", "data": [{"id": "fast", "object": "model"}]}
            self.transport.write(_response(200, json.dumps(models).encode()))
        else:
            self.transport.write(_response(404, b'{"error":{"message":"not found"}}'))

    async def _spaced(self, events: list[bytes], entry: list[Any]) -> None:
        assert self.transport is not None
        self.transport.write(STREAM_HEAD + events[0])
        t0 = time.monotonic()
        for k, ev in enumerate(events[1:], 1):
            delay = t0 + k * self.server.itl_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.transport.is_closing():
                return
            self.transport.write(ev)
        entry[3] = time.monotonic()
        self.busy = False
        if self.buf:
            self.data_received(b"")


class FastServer:
    """The server's state: its options and the request log."""

    def __init__(self, tokens: int | None = None, itl_s: float = 0.0) -> None:
        self.tokens = tokens
        self.itl_s = itl_s
        self.log = Log()

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Conn(self), host, port, backlog=4096)


async def _main(args: argparse.Namespace) -> None:
    srv = FastServer(args.tokens, args.itl_ms / 1e3)
    server = await srv.serve(args.host, args.port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=None, help="tokens per reply (max_tokens)")
    ap.add_argument("--itl-ms", type=float, default=0.0, help="gap between token events")
    try:
        asyncio.run(_main(ap.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
