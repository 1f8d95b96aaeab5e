"""The streaming driver against a server with known timing and injected failures."""

from __future__ import annotations

import asyncio
import socket
import statistics
from collections.abc import Iterator

import pytest

from kvexp.clock import Clock
from kvexp.results.records import InstanceHandle, RequestRow, RequestSpec
from kvexp.workloads.driver import drive, run_workload
from tests.delay_server import DelayServer


@pytest.fixture(scope="module")
def server() -> Iterator[DelayServer]:
    with DelayServer() as srv:
        yield srv


def inst(srv: DelayServer, name: str = "a") -> dict[str, InstanceHandle]:
    return {name: InstanceHandle(name=name, base_url=srv.base_url, served_model="test-model")}


def spec(rid: int, prompt: str = "hi", at_s: float = 0.0, **kw: object) -> RequestSpec:
    kw.setdefault("max_tokens", 64)
    return RequestSpec(request_id=rid, instance="a", at_s=at_s, prompt=prompt, **kw)  # type: ignore[arg-type]


def test_timings_match_the_server(server: DelayServer) -> None:
    ttft, itl, n = 0.2, 0.02, 20
    specs = [spec(i, f"q [ttft={ttft} itl={itl} n={n}]") for i in range(4)]
    rows = run_workload(specs, inst(server), Clock(), progress=False)
    assert [r.request_id for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert r.ok and r.status == 200 and r.error == ""
        assert ttft <= r.ttft_s < ttft + 0.15
        assert r.first_token_time == pytest.approx(r.sent_time + r.ttft_s)
        assert len(r.itl_s) == n  # the role chunk has choices: it counts, as in vLLM
        assert statistics.median(r.itl_s) == pytest.approx(itl, rel=0.3)
        assert r.tokens_per_event == []  # no usage on each chunk unless asked
        assert r.completion_tokens == n and r.prompt_tokens == 4
        expected_e2e = ttft + (n - 1) * itl
        assert expected_e2e <= r.e2e_s < expected_e2e + 0.2
        assert r.end_time == pytest.approx(r.sent_time + r.e2e_s)
        assert r.tpot_s == pytest.approx((r.e2e_s - r.ttft_s) / (n - 1))
        assert r.tpot_s == pytest.approx(itl, rel=0.3)
    body = server.received[-1].body
    assert body["model"] == "test-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}  # what vLLM's client asks
    assert body["messages"] == [{"role": "user", "content": specs[-1].prompt}]
    assert "ignore_eos" not in body and body["max_tokens"] == 64


def test_tokens_per_event_from_usage(server: DelayServer) -> None:
    specs = [
        RequestSpec(0, "a", 0.0, max_tokens=12, api="completions", prompt_token_ids=[101] * 7,
                    ignore_eos=True),
        spec(1, "[tpe=2 n=5 itl=0.03]", api="completions"),
        spec(2, "[tpe=2 n=6 usage=0]"),
    ]
    r0, r1, r2 = run_workload(specs, inst(server), Clock(), progress=False,
                              continuous_usage_stats=True)
    body = next(x.body for x in server.received if x.body.get("prompt") == [101] * 7)
    assert body["ignore_eos"] is True and "messages" not in body
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert r0.ok and r0.completion_tokens == 12 and r0.prompt_tokens == 7
    assert r0.tokens_per_event == [1] * 12
    assert r1.ok and r1.tokens_per_event == [2, 2, 1] and len(r1.itl_s) == 2
    assert statistics.median(r1.itl_s) == pytest.approx(0.03, rel=0.3)
    assert r1.tpot_s == pytest.approx((r1.e2e_s - r1.ttft_s) / 4)
    # a server that leaves usage off the chunks: no per-event counts; the final usage counts
    assert r2.ok and r2.tokens_per_event == [] and r2.completion_tokens == 6


def test_failures_are_rows(server: DelayServer) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    instances = inst(server)
    instances["dead"] = InstanceHandle("dead", f"http://127.0.0.1:{dead_port}", served_model="m")
    prompts = ["ok", "[fail=500]", "[fail=429]", "[fail=close]", "[fail=malformed]",
               "[fail=error]", "[fail=nodone]", "[fail=hang]", "ok again"]
    specs = [spec(i, p) for i, p in enumerate(prompts)]
    specs.append(RequestSpec(len(specs), "dead", 0.0, max_tokens=8, prompt="x"))
    seen: list[RequestRow] = []
    rows = run_workload(specs, instances, Clock(), timeout_s=1.0, on_row=seen.append,
                        progress=False)
    assert len(rows) == len(specs) == len(seen)
    by = {p: r for p, r in zip(prompts + ["dead"], rows, strict=True)}
    assert by["ok"].ok and by["ok again"].ok
    assert [r.ok for r in rows].count(True) == 2
    assert by["[fail=500]"].status == 500 and by["[fail=500]"].error.startswith("HTTP 500")
    assert "injected failure 500" in by["[fail=500]"].error
    assert by["[fail=429]"].status == 429
    assert by["[fail=close]"].status == 200 and "stream broken" in by["[fail=close]"].error
    assert by["[fail=close]"].ttft_s is not None  # what was measured before the break stays
    assert "malformed SSE" in by["[fail=malformed]"].error
    assert "injected error in stream" in by["[fail=error]"].error
    assert "[DONE]" in by["[fail=nodone]"].error
    assert by["[fail=hang]"].status is None and "timeout" in by["[fail=hang]"].error
    assert 0.9 <= by["[fail=hang]"].e2e_s < 1.5
    assert by["dead"].status is None and "connection failed" in by["dead"].error
    for r in rows:
        assert r.end_time is not None and r.e2e_s is not None
        if not r.ok:
            assert r.error and r.tpot_s is None


def test_scheduled_vs_sent(server: DelayServer) -> None:
    clock = Clock()
    start = clock.now() + 0.1
    specs = [spec(i, "[n=2]", at_s=0.15 * i) for i in range(5)]
    rows = run_workload(specs, inst(server), clock, start_time=start, progress=False)
    for r, s in zip(rows, specs, strict=True):
        assert r.scheduled_time == pytest.approx(start + s.at_s, abs=1e-6)
        assert r.send_lag_s == pytest.approx(r.sent_time - r.scheduled_time, abs=1e-6)
        assert 0.0 <= r.send_lag_s < 0.05
    assert [r.sent_time for r in rows] == sorted(r.sent_time for r in rows)


def test_wait_for_wave_chains_waves(server: DelayServer) -> None:
    gap = 0.25
    specs = [spec(3 * k + j, "[ttft=0.3 n=3]", at_s=0.05 * k, wave=k)
             for k in range(3) for j in range(3)]
    specs.append(spec(9, "[ttft=0.3 n=3]", at_s=0.15, wave=2))  # 0.05 s into wave 2
    rows = run_workload(specs, inst(server), Clock(), wait_for_wave=True, wave_gap_s=gap,
                        progress=False)
    waves = {k: [r for r in rows if r.wave == k] for k in range(3)}
    for k in (1, 2):
        prev_end = max(r.end_time for r in waves[k - 1])
        due = prev_end + gap
        for r in waves[k]:
            offset = 0.05 if r.request_id == 9 else 0.0
            assert r.scheduled_time == pytest.approx(due + offset, abs=1e-6)
            assert r.sent_time >= prev_end + gap
            assert r.send_lag_s < 0.05
    # without chaining the waves overlap: they follow at_s alone
    flat = run_workload(specs, inst(server), Clock(), progress=False)
    assert max(r.sent_time for r in flat) - min(r.sent_time for r in flat) < 0.2
    with pytest.raises(ValueError, match="wave index"):
        run_workload([spec(0), spec(1, wave=0)], inst(server), Clock(), wait_for_wave=True,
                     progress=False)
    plain = run_workload([spec(0, "[n=2]", at_s=0.1)], inst(server), Clock(), wait_for_wave=True,
                         progress=False)
    assert plain[0].ok and plain[0].scheduled_time > 0


def test_cancel_keeps_rows(server: DelayServer) -> None:
    seen: list[RequestRow] = []

    async def main() -> None:
        specs = [spec(0, "[n=1]"), spec(1, "[ttft=5]"), spec(2, "[ttft=5]"),
                 spec(3, "never sent", at_s=30.0)]
        task = asyncio.create_task(drive(specs, inst(server), Clock(), on_row=seen.append,
                                         progress=False))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    by = {r.request_id: r for r in seen}
    assert set(by) == {0, 1, 2}
    assert by[0].ok
    for rid in (1, 2):
        assert not by[rid].ok and by[rid].error == "cancelled" and by[rid].status == 200
        assert 0.4 < by[rid].e2e_s < 1.0


def test_many_concurrent_with_progress_bar(server: DelayServer) -> None:
    specs = [spec(i, "[ttft=0.1 itl=0.01 n=10]") for i in range(64)]
    rows = run_workload(specs, inst(server), Clock(), progress=True)
    assert len(rows) == 64 and all(r.ok for r in rows)
    assert max(r.ttft_s for r in rows) < 1.0


def test_unknown_instance_is_rejected(server: DelayServer) -> None:
    with pytest.raises(ValueError, match="not running"):
        run_workload([RequestSpec(0, "zz", 0.0, 8, prompt="x")], inst(server), Clock(),
                     progress=False)
