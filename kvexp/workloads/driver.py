"""Streaming load driver: sends a schedule to OpenAI-compatible servers and measures each request.

Definitions (README, "Definitions"); every time comes from `Clock.now()`, taken as each SSE
line is parsed:

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
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import anyio.lowlevel
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvexp.clock import Clock
from kvexp.records import InstanceHandle, RequestRow, RequestSpec

log = logging.getLogger(__name__)

ERROR_BODY_CHARS = 500
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


class _Clients:
    """httpx clients of one connection each, lent to one request at a time, per instance.

    httpcore 1.0's pool scans every connection for every queued request on each event
    (O(connections x requests)); one shared client of 64 connections added ~0.5 s to TTFT
    at 64 concurrent streams. A free list of one-connection clients keeps that O(1).
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout = httpx.Timeout(timeout_s)
        self._ssl = ssl.create_default_context()  # shared: building one costs ~70 ms
        self._free: dict[str, list[httpx.AsyncClient]] = {}
        self._all: list[httpx.AsyncClient] = []

    def take(self, instance: str) -> httpx.AsyncClient:
        free = self._free.get(instance)
        if free:
            return free.pop()
        client = httpx.AsyncClient(
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            verify=self._ssl,
            trust_env=False,
        )
        self._all.append(client)
        return client

    def give(self, instance: str, client: httpx.AsyncClient) -> None:
        self._free.setdefault(instance, []).append(client)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._all), return_exceptions=True)


class _Runner:
    """Sends one request at its due time and turns what happens into a RequestRow."""

    def __init__(
        self,
        clients: _Clients,
        instances: dict[str, InstanceHandle],
        clock: Clock,
        timeout_s: float,
        on_row: Callable[[RequestRow], None] | None,
        bar: _Bar,
    ) -> None:
        self.clients = clients
        self.instances = instances
        self.clock = clock
        self.timeout_s = timeout_s
        self.on_row = on_row
        self.bar = bar
        self.rows: list[RequestRow] = []

    async def run(self, spec: RequestSpec, due: float) -> RequestRow:
        inst = self.instances[spec.instance]
        url = inst.base_url.rstrip("/") + ENDPOINTS[spec.api]
        content = json.dumps(request_body(spec, inst)).encode()
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
        delay = due - self.clock.now()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = False

        async def send() -> None:
            nonlocal sent
            row.sent_time = self.clock.now()
            row.send_lag_s = row.sent_time - due
            sent = True
            client = self.clients.take(spec.instance)
            try:
                async with client.stream(
                    "POST", url, content=content, headers={"content-type": "application/json"}
                ) as resp:
                    row.status = resp.status_code
                    if resp.status_code != 200:
                        text = (await resp.aread()).decode(errors="replace")
                        raise StreamError(f"HTTP {resp.status_code}: {text[:ERROR_BODY_CHARS]}")
                    await self._read(resp, row)
            finally:
                self.clients.give(spec.instance, client)

        try:
            await asyncio.wait_for(send(), self.timeout_s)
            row.ok = True
        except asyncio.CancelledError:
            if sent:
                row.error = "cancelled"
                self._finish(row)
            raise
        except asyncio.TimeoutError:
            row.error = f"timeout: no complete response within {self.timeout_s:g} s"
        except StreamError as e:
            row.error = str(e)
        except httpx.TimeoutException as e:
            row.error = f"timeout: {type(e).__name__} {e}".strip()
        except httpx.ConnectError as e:
            row.error = f"connection failed: {type(e).__name__}: {e}"
        except httpx.HTTPError as e:
            what = "stream broken" if row.status is not None else "request failed"
            row.error = f"{what}: {type(e).__name__}: {e}"
        except Exception as e:  # any failure is a row, not a crash
            row.error = f"{type(e).__name__}: {e}"
        self._finish(row)
        return row

    async def _read(self, resp: httpx.Response, row: RequestRow) -> None:
        """Parse the SSE stream into the row's timings and token counts."""
        done = False
        last_content: float | None = None
        tokens_at_last_content = 0
        async for line in resp.aiter_lines():
            now = self.clock.now()
            row.end_time = now
            field, _, value = line.partition(":")
            if field != "data":
                continue  # blank separator, comment, or another SSE field
            value = value[1:] if value.startswith(" ") else value
            if value.strip() == "[DONE]":
                done = True
                continue
            try:
                obj = json.loads(value)
            except json.JSONDecodeError as e:
                raise StreamError(f"malformed SSE event ({e}): {value[:200]!r}") from None
            if not isinstance(obj, dict):
                raise StreamError(f"malformed SSE event (not an object): {value[:200]!r}")
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
                continue
            if last_content is None:
                row.first_token_time = now
                row.ttft_s = now - row.sent_time
            else:
                row.itl_s.append(now - last_content)
            last_content = now
            if completion is None:
                row.tokens_per_event.append(1)
            else:
                row.tokens_per_event.append(max(completion - tokens_at_last_content, 0))
                tokens_at_last_content = completion
        if not done:
            raise StreamError("stream ended before [DONE]")

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


async def _chained(
    runner: _Runner, specs: Sequence[RequestSpec], start: float, gap_s: float
) -> None:
    waves = sorted({s.wave for s in specs})
    if waves == [-1]:
        await asyncio.gather(*(runner.run(s, start + s.at_s) for s in specs))
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
        rows = await asyncio.gather(*(runner.run(s, due + s.at_s - base) for s in group))
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
    clients = _Clients(timeout_s)
    for name in {s.instance for s in specs}:  # first client and backend imports: not in request 0
        clients.give(name, clients.take(name))
    await anyio.lowlevel.checkpoint()
    try:
        with _Bar(len(specs), progress) as bar:
            runner = _Runner(clients, instances, clock, timeout_s, on_row, bar)
            start = clock.now() if start_time is None else start_time
            if wait_for_wave:
                await _chained(runner, specs, start, wave_gap_s)
            else:
                await asyncio.gather(*(runner.run(s, start + s.at_s) for s in specs))
    finally:
        await clients.aclose()
    return sorted(runner.rows, key=lambda r: r.request_id)


def run_workload(
    specs: Sequence[RequestSpec],
    instances: dict[str, InstanceHandle],
    clock: Clock,
    **kwargs: Any,
) -> list[RequestRow]:
    """`drive` from synchronous code (asyncio.run); same keyword arguments."""
    return asyncio.run(drive(specs, instances, clock, **kwargs))
