"""One streamed reply (server-sent events) turned into a request's latencies.

The definitions are those of vLLM's benchmark client (`vllm bench serve`,
vllm/benchmarks/lib/endpoint_request_func.py); README, "Latency definitions". A *token
chunk* is a data event whose `choices` list is not empty, whatever its text (a role-only
or special-token chunk counts, as in vLLM); each event's time is `clock.now()` as its line
is parsed.

- TTFT: sent -> first token chunk. ITL: every gap between consecutive token chunks.
- E2E: sent -> last token chunk (the trailing usage chunk and `[DONE]` do not count);
  for a failure, sent -> the failure.
- TPOT: (E2E - TTFT) / (completion_tokens - 1), ok requests with completion_tokens > 1.
- prompt/completion tokens: the last `usage` seen (the final usage chunk of
  `include_usage`).
- tokens_per_event: with continuous usage stats (usage on every token chunk), the rise
  of completion_tokens per token chunk; empty when the token chunks carry no usage.

Where kvexp is stricter than vLLM's client: a stream must end with `[DONE]` and carry at
least one token chunk, and an error event fails the request (vLLM's client only fails a
stream without any token chunk).
"""

from __future__ import annotations

import json
from typing import Any

from kvexp.clock import Clock
from kvexp.results.records import RequestRow


class StreamError(Exception):
    """The server answered, but not with a good stream: bad status, bad SSE, error event."""


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        msg = err.get("message") or json.dumps(err)
        code = err.get("code") or err.get("type")
        return f"{msg} ({code})" if code else str(msg)
    return str(err)


def _excerpt(value: str) -> str:
    return value[:200]


class StreamParser:
    """Feeds a reply's body bytes in; fills the row's timings and token counts."""

    __slots__ = ("clock", "done", "last_token", "per_event", "rest", "row", "tokens_seen",
                 "usage_on_every_chunk")

    def __init__(self, row: RequestRow, clock: Clock) -> None:
        self.row = row
        self.clock = clock
        self.done = False  # [DONE] seen
        self.last_token: float | None = None  # time of the last token chunk
        self.tokens_seen = 0  # completion_tokens at the last token chunk
        self.per_event: list[int] = []
        self.usage_on_every_chunk = True
        self.rest = b""

    def feed(self, data: bytes) -> None:
        """Some bytes of the body, split anywhere."""
        lines = (self.rest + data).split(b"\n") if self.rest else data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            if line and line != b"\r":  # blank lines only separate events
                self._line(line)

    def close(self) -> None:
        """The body ended: check it was a whole stream; end_time = the last token chunk."""
        if self.rest.strip():
            self._line(self.rest)
            self.rest = b""
        if not self.done:
            raise StreamError("stream ended before [DONE]")
        if self.last_token is None:
            raise StreamError("stream had no chunk with choices (no token)")
        self.row.end_time = self.last_token
        if self.usage_on_every_chunk:
            self.row.tokens_per_event = self.per_event

    def _line(self, line: bytes) -> None:
        """One SSE line: what a data event says, at the time it is parsed."""
        now = self.clock.now()
        field, _, raw = line.partition(b":")
        if field != b"data":
            return  # a comment or another SSE field
        value = raw.decode(errors="replace").strip()  # str: json.loads skips its sniffing
        if value == "[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(value)
        except ValueError as e:
            raise StreamError(f"malformed SSE event ({e}): {_excerpt(value)!r}") from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed SSE event (not an object): {_excerpt(value)!r}")
        if obj.get("error") or obj.get("object") == "error":
            raise StreamError(f"error in stream: {_error_text(obj.get('error') or obj)}")
        row = self.row
        usage = obj.get("usage")
        completion = None
        if isinstance(usage, dict):
            if usage.get("prompt_tokens") is not None:
                row.prompt_tokens = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                completion = int(usage["completion_tokens"])
                row.completion_tokens = completion
        if not obj.get("choices"):
            return  # e.g. the final usage chunk
        if self.last_token is None:
            row.first_token_time = now
            row.ttft_s = now - row.sent_time
        else:
            row.itl_s.append(now - self.last_token)
        self.last_token = now
        if completion is None:
            self.usage_on_every_chunk = False
        else:
            self.per_event.append(max(completion - self.tokens_seen, 0))
            self.tokens_seen = completion


def finish(row: RequestRow, end_time: float) -> None:
    """Close a row at `end_time`: E2E, and TPOT when the row is ok."""
    row.end_time = end_time
    row.e2e_s = end_time - row.sent_time
    ct = row.completion_tokens
    if row.ok and row.ttft_s is not None and ct is not None and ct > 1:
        row.tpot_s = (row.e2e_s - row.ttft_s) / (ct - 1)
