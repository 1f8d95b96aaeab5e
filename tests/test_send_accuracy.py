"""The send-accuracy benchmark runs end to end at a tiny rate (its figures are not checked),
and the bodies the driver encodes ahead go with their own requests."""

from __future__ import annotations

import pytest

from benchmarks.send_accuracy import EXCERPT, main, start_server
from kvexp.clock import Clock
from kvexp.results.records import InstanceHandle, RequestSpec
from kvexp.workloads.driver import run_workload


def test_send_accuracy_replays_the_excerpt_and_prints_its_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    results = main(["--rates", "20", "40", "--seconds", "0.5", "--trace", str(EXCERPT),
                    "--reply-tokens", "3"])
    assert [(r.rate, r.n, r.ok) for r in results] == [(20.0, 10, 10), (40.0, 20, 20)]
    for r in results:  # one lag per request, as the driver and as the server saw it
        assert len(r.lag) == r.n and len(r.arrival_lag) == r.n and r.cpu_s > 0
    out = capsys.readouterr().out
    assert "benchmarks/fast_server.py" in out and "send lag p50" in out
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["20", "40"]


def test_bodies_encoded_ahead_reach_their_own_requests() -> None:
    """Requests 1 ms apart after a 0.2 s wait: their bodies are encoded ahead, during the
    wait; each reply's prompt_tokens (the fast server counts the ids) is its own prompt's."""
    proc, url = start_server(reply_tokens=2, itl_ms=0.0)
    try:
        specs = [RequestSpec(k, "a", 0.2 + 0.001 * k, max_tokens=2, api="completions",
                             prompt_token_ids=[7] * (10 + k)) for k in range(30)]
        rows = run_workload(specs, {"a": InstanceHandle("a", url, served_model="fast")},
                            Clock(), progress=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert [r.ok for r in rows] == [True] * 30
    assert [r.prompt_tokens for r in rows] == [10 + k for k in range(30)]
    assert [r.request_id for r in sorted(rows, key=lambda r: r.sent_time)] == list(range(30))
