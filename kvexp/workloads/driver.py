"""Streaming load driver: sends a schedule to OpenAI-compatible servers and measures each request.

The request body is built in `request`, each reply is parsed in `stream` (which states the
latency definitions: vLLM's benchmark client's), and this module runs the schedule.

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

from kvexp.clock import Clock
from kvexp.results.records import InstanceHandle, RequestRow, RequestSpec
from kvexp.workloads.http11 import Client, ConnectError, Origin, ProtocolError, Response
from kvexp.workloads.progress import Bar
from kvexp.workloads.request import ENDPOINTS, request_body
from kvexp.workloads.stream import StreamError, StreamParser, finish

log = logging.getLogger(__name__)

ERROR_BODY_CHARS = 500
ENCODE_AHEAD_S = 0.05  # encode the bodies due this soon after a request while it waits
__all__ = ["ENDPOINTS", "StreamError", "drive", "request_body", "run_workload"]


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
        bar: Bar,
        continuous_usage_stats: bool = False,
    ) -> None:
        self.client = client
        self.instances = instances
        self.origins = {name: Origin.parse(i.base_url) for name, i in instances.items()}
        self.clock = clock
        self.timeout_s = timeout_s
        self.on_row = on_row
        self.bar = bar
        self.rows: list[RequestRow] = []
        self.continuous_usage_stats = continuous_usage_stats

    def encode(self, spec: RequestSpec) -> bytes:
        """The request's JSON body, ready to send."""
        body = request_body(spec, self.instances[spec.instance],
                            continuous_usage_stats=self.continuous_usage_stats)
        return json.dumps(body).encode()

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
        parser = StreamParser(row, self.clock)
        async for data in resp.chunks():
            parser.feed(data)
        parser.close()

    def _finish(self, row: RequestRow) -> None:
        finish(row, row.end_time if row.ok and row.end_time is not None else self.clock.now())
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
    continuous_usage_stats: bool = False,
) -> list[RequestRow]:
    """Send every spec at its due time; return one row per sent request, by request_id.

    `start_time` (epoch seconds on `clock`) is when at_s = 0 falls; default: now.
    On cancellation, in-flight requests reach `on_row` as "cancelled" rows, then the
    CancelledError propagates. `continuous_usage_stats`: ask for usage on every chunk
    (fills `tokens_per_event`; vLLM's benchmark client does not ask for it).
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
        with Bar(len(specs), progress) as bar:
            runner = _Runner(client, instances, clock, timeout_s, on_row, bar,
                             continuous_usage_stats)
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
