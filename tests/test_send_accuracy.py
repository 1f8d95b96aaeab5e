"""The send-accuracy benchmark runs end to end at a tiny rate (its figures are not checked)."""

from __future__ import annotations

import pytest

from benchmarks.send_accuracy import EXCERPT, main


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
