"""Streaming load driver: sends a schedule to OpenAI-compatible servers and measures each request.

Definitions (README, "Definitions"); every time comes from `Clock.now()`, taken as each SSE
line (other than the blank lines between events) is parsed:

- TTFT: sent -> first event carrying generated text, reasoning text or token ids.
- ITL: every gap between consecutive content events (all samples kept).
- tokens_per_event: the rise of usage.completion_tokens since the previous content event
  (continuous usage stats); 1 when the event has no usage.
- E2E: sent -> last line received (for a failure: sent -> the failure).
- TPOT: (E2E - TTFT) / (completion_tokens - 1), ok requests with completion_tokens > 1.
- prompt/completion tokens: the last usage seen.

Scheduling: a request is due at `start + at_s`. With `wait_for_wave`, waves run in order of
their index: wave 0 is due at `start + min(at_s of wave 0)`; wave k > 0 is due at the latest
end_time of wave k - 1 plus `wave_gap_s`. Within a wave, request r is due at the wave's due
time + (r.at_s - min(at_s of the wave)). `scheduled_time` is that due time, so send lag is
measured against the actual chained timeline. Specs that all have wave -1 (Poisson, gamma)
just follow at_s.

Failures are rows (ok=False, error set, e2e to the failure); a request cancelled after it was
sent becomes a row with error "cancelled"; one never sent is no row.

Cost: one task per request, started when it is due, and the lean HTTP/1.1 client of
`http11` (keep-alive connections on a free list): on 2 cores this holds 800 req/s of short
streamed replies with ~0.4 ms of CPU per request (benchmarks/load_generator.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvexp.clock import Clock
from kvexp.results.records import InstanceHandle, RequestRow, RequestSpec
from kvexp.workloads.http11 import Client, ConnectError, Origin, ProtocolError, Response

log = logging.getLogger(__name__)

ERROR_BODY_CHARS = 500
ENCODE_AHEAD_S = 0.05  # encode the bodies due this soon after a request while it waits
ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class StreamError(Exception):
    """The server answered, but not with a good stream: bad status, bad SSE, error event."""


def request_body(spec: RequestSpec, instance: InstanceHandle) -> dict[str, Any]:
    """The JSON body of a spec's streaming request."""
    body: dict[str, Any] = {
        "model": instance.served_model,
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if spec.api == "chat":
        if spec.prompt is None:
            raise ValueError(f"request {spec.request_id}: the chat API needs a text prompt")
        body["messages"] = [{"role": "user", "content": spec.prompt}]
    elif spec.api == "completions":
        prompt = spec.prompt_token_ids if spec.prompt_token_ids is not None else spec.prompt
        if prompt is None:
            raise ValueError(f"request {spec.request_id}: no prompt")
        body["prompt"] = prompt
    else:
        raise ValueError(f"request {spec.request_id}: unknown api {spec.api!r}")
    return body


def _has_content(obj: dict[str, Any]) -> bool:
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text") or choice.get("token_ids"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
        ):
            return True
    return False


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        msg = err.get("message") or json.dumps(err)
        code = err.get("code") or err.get("type")
        return f"{msg} ({code})" if code else str(msg)
    return str(err)


class _SseState:
    """Where one stream's parse stands."""

    __slots__ = ("done", "last_content", "tokens_at_last_content")

    def __init__(self) -> None:
        self.done = False
        self.last_content: float | None = None
        self.tokens_at_last_content = 0


def _excerpt(value: str) -> str:
    return value[:200]


class _Bar:
    """A rich progress bar (total, done, failed); a no-op when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.failed = 0
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("requests"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("requests", total=total, failed=0)

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def done(self, ok: bool) -> None:
        self.failed += not ok
        if self._progress is not None:
            self._progress.update(self._task, advance=1, failed=self.failed)


T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def _within(aw: Awaitable[T], seconds: float) -> T:
        """`aw`, or TimeoutError after `seconds` (no extra task, unlike wait_for)."""
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - Python 3.10
    _within = asyncio.wait_for


class _Runner:
    """Sends one request and turns what happens into a RequestRow."""

    def __init__(
        self,
        client: Client,
        instances: dict[str, InstanceHandle],
        clock: Clock,
        timeout_s: float,
        on_row: Callable[[RequestRow], None] | None,
        bar: _Bar,
    ) -> None:
        self.client = client
        self.instances = instances
        self.origins = {name: Origin.parse(i.base_url) for name, i in instances.items()}
        self.clock = clock
        self.timeout_s = timeout_s
        self.on_row = on_row
        self.bar = bar
        self.rows: list[RequestRow] = []

    def encode(self, spec: RequestSpec) -> bytes:
        """The request's JSON body, ready to send."""
        return json.dumps(request_body(spec, self.instances[spec.instance])).encode()

    async def run(self, spec: RequestSpec, due: float, content: bytes) -> RequestRow:
        """Send now (the caller starts this at `due`) and measure the reply."""
        row = RequestRow(
            request_id=spec.request_id,
            instance=spec.instance,
            wave=spec.wave,
            api=spec.api,
            scheduled_time=due,
            sent_time=due,
            send_lag_s=0.0,
            max_tokens=spec.max_tokens,
        )
        row.sent_time = self.clock.now()
        row.send_lag_s = row.sent_time - due
        try:
            await _within(self._send(spec, content, row), self.timeout_s)
            row.ok = True
        except asyncio.CancelledError:
            row.error = "cancelled"
            self._finish(row)
            raise
        except (TimeoutError, asyncio.TimeoutError):  # the same class from 3.11 on
            row.error = f"timeout: no complete response within {self.timeout_s:g} s"
        except StreamError as e:
            row.error = str(e)
        except ConnectError as e:
            row.error = f"connection failed: {e}"
        except (ProtocolError, OSError) as e:
            what = "stream broken" if row.status is not None else "request failed"
            row.error = f"{what}: {type(e).__name__}: {e}"
        except Exception as e:  # any failure is a row, not a crash
            row.error = f"{type(e).__name__}: {e}"
        self._finish(row)
        return row

    async def _send(self, spec: RequestSpec, content: bytes, row: RequestRow) -> None:
        origin = self.origins[spec.instance]
        conn, resp = await self.client.post(origin, ENDPOINTS[spec.api], content)
        try:
            row.status = resp.status
            if resp.status != 200:
                text = (await resp.read()).decode(errors="replace")
                raise StreamError(f"HTTP {resp.status}: {text[:ERROR_BODY_CHARS]}")
            await self._read(resp, row)
        finally:
            self.client.release(origin, resp, conn)

    async def _read(self, resp: Response, row: RequestRow) -> None:
        """Parse the SSE stream into the row's timings and token counts."""
        state = _SseState()
        rest = b""
        async for data in resp.chunks():
            lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line and line != b"\r":  # blank lines only separate events
                    self._line(line, row, state)
        if rest.strip():
            self._line(rest, row, state)
        if not state.done:
            raise StreamError("stream ended before [DONE]")

    def _line(self, line: bytes, row: RequestRow, state: _SseState) -> None:
        """One SSE line: its time, and what a data event says."""
        now = self.clock.now()
        row.end_time = now
        field, _, raw = line.partition(b":")
        if field != b"data":
            return  # a comment or another SSE field
        value = raw.decode(errors="replace").strip()  # str: json.loads skips its sniffing
        if value == "[DONE]":
            state.done = True
            return
        try:
            obj = json.loads(value)
        except ValueError as e:
            raise StreamError(f"malformed SSE event ({e}): {_excerpt(value)!r}") from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed SSE event (not an object): {_excerpt(value)!r}")
        if obj.get("error") or obj.get("object") == "error":
            raise StreamError(f"error in stream: {_error_text(obj.get('error') or obj)}")
        usage = obj.get("usage")
        completion = None
        if isinstance(usage, dict):
            if usage.get("prompt_tokens") is not None:
                row.prompt_tokens = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                completion = int(usage["completion_tokens"])
                row.completion_tokens = completion
        if not _has_content(obj):
            return
        if state.last_content is None:
            row.first_token_time = now
            row.ttft_s = now - row.sent_time
        else:
            row.itl_s.append(now - state.last_content)
        state.last_content = now
        if completion is None:
            row.tokens_per_event.append(1)
        else:
            row.tokens_per_event.append(max(completion - state.tokens_at_last_content, 0))
            state.tokens_at_last_content = completion

    def _finish(self, row: RequestRow) -> None:
        if row.end_time is None or not row.ok:
            row.end_time = self.clock.now()
        row.e2e_s = row.end_time - row.sent_time
        ct = row.completion_tokens
        if row.ok and row.ttft_s is not None and ct is not None and ct > 1:
            row.tpot_s = (row.e2e_s - row.ttft_s) / (ct - 1)
        self.rows.append(row)
        self.bar.done(row.ok)
        if self.on_row is not None:
            try:
                self.on_row(row)
            except Exception:
                log.exception("on_row callback failed for request %d", row.request_id)


async def _dispatch(
    runner: _Runner, items: Sequence[tuple[float, RequestSpec]]
) -> list[RequestRow]:
    """Start each request at its due time (items in due order); the rows when all are done.

    One task per request, created when it is due (not all up front, which would make the
    first sends late by the time it takes to set up every other request). Bodies are
    encoded before the wait: the request's own, then those due within ENCODE_AHEAD_S of
    it while it is not yet due (a token-id prompt takes ~0.2-0.5 ms to encode, which
    made the later sends of a burst late). Cancelled: the requests in flight become
    "cancelled" rows.
    """
    tasks: list[asyncio.Task[RequestRow]] = []
    bodies: dict[int, bytes] = {}  # index in items -> body encoded ahead
    ahead, cost = 0, 0.0  # the next index to encode; how long the last encoding took
    clock = runner.clock
    try:
        for k, (due, spec) in enumerate(items):
            ahead = max(ahead, k)
            while ahead < len(items) and (ahead == k or (
                    items[ahead][0] - due < ENCODE_AHEAD_S and clock.now() + cost < due)):
                t0 = clock.now()
                bodies[ahead] = runner.encode(items[ahead][1])
                cost = clock.now() - t0
                ahead += 1
            content = bodies.pop(k)
            gc.freeze()  # rows and bodies so far: out of the collector's scans (see drive)
            delay = due - clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(runner.run(spec, due, content)))
        return list(await asyncio.gather(*tasks))
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _in_due_order(items: list[tuple[float, RequestSpec]]) -> list[tuple[float, RequestSpec]]:
    return sorted(items, key=lambda x: (x[0], x[1].request_id))


async def _chained(
    runner: _Runner, specs: Sequence[RequestSpec], start: float, gap_s: float
) -> None:
    waves = sorted({s.wave for s in specs})
    if waves == [-1]:
        await _dispatch(runner, _in_due_order([(start + s.at_s, s) for s in specs]))
        return
    if waves and waves[0] < 0:
        raise ValueError(
            "wait_for_wave needs every spec to have a wave index >= 0 "
            "(pass wait_for_wave=schedules.chains_waves(w))"
        )
    due = start
    for k, wave in enumerate(waves):
        group = [s for s in specs if s.wave == wave]
        base = min(s.at_s for s in group)
        if k == 0:
            due = start + base
        items = _in_due_order([(due + s.at_s - base, s) for s in group])
        rows = await _dispatch(runner, items)
        due = max(r.end_time or 0.0 for r in rows) + gap_s


async def drive(
    specs: Sequence[RequestSpec],
    instances: dict[str, InstanceHandle],
    clock: Clock,
    *,
    wait_for_wave: bool = False,
    wave_gap_s: float = 0.0,
    timeout_s: float = 300.0,
    on_row: Callable[[RequestRow], None] | None = None,
    progress: bool = True,
    start_time: float | None = None,
) -> list[RequestRow]:
    """Send every spec at its due time; return one row per sent request, by request_id.

    `start_time` (epoch seconds on `clock`) is when at_s = 0 falls; default: now.
    On cancellation, in-flight requests reach `on_row` as "cancelled" rows, then the
    CancelledError propagates.
    """
    unknown = sorted({s.instance for s in specs} - set(instances))
    if unknown:
        raise ValueError(f"specs name instances that are not running: {unknown}")
    for s in specs:
        request_body(s, instances[s.instance])  # fail early on an unsendable spec
    client = Client()
    # What exists now (the schedule's prompt token lists), and before each send the rows
    # and bodies made so far, leave the cyclic collector's scans until the end (refcounting
    # still frees them): a full collection of an 800 req/s trace schedule took ~220 ms and
    # of its finished rows up to ~370 ms, every send late meanwhile. gc.freeze is O(1).
    gc.freeze()
    try:
        with _Bar(len(specs), progress) as bar:
            runner = _Runner(client, instances, clock, timeout_s, on_row, bar)
            start = clock.now() if start_time is None else start_time
            if wait_for_wave:
                await _chained(runner, specs, start, wave_gap_s)
            else:
                await _dispatch(runner, _in_due_order([(start + s.at_s, s) for s in specs]))
    finally:
        gc.unfreeze()
        await client.aclose()
    return sorted(runner.rows, key=lambda r: r.request_id)


def run_workload(
    specs: Sequence[RequestSpec],
    instances: dict[str, InstanceHandle],
    clock: Clock,
    **kwargs: Any,
) -> list[RequestRow]:
    """`drive` from synchronous code (asyncio.run); same keyword arguments."""
    return asyncio.run(drive(specs, instances, clock, **kwargs))
