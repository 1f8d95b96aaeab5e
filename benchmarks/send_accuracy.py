"""Send accuracy of a trace replay: how late kvexp's driver sends at compressed trace rates.

Replays a trace (default: the Azure LLM 2023 conversation trace) through kvexp's trace
workload (`plan_trace` with `target_rate`, token-id prompts of the traced input length,
`max_tokens` = the traced output length) and kvexp's driver (`run_workload`, http11) against
`benchmarks/fast_server.py` in its own process: a local HTTP server that answers at once,
streaming the asked tokens (or `--reply-tokens`) as SSE events, `--itl-ms` apart if given.
No GPU, no model: this measures the sending path only.

Per rate, the first `rate x --seconds` requests of the trace (the window compressed so
their mean rate is `rate`) and:

- send lag: the driver's own figure (sent_time - scheduled_time, taken when the request's
  task starts), p50 / p99 / max;
- arrival lag: when the server parsed the request head minus the scheduled time (both
  `time.monotonic()`), i.e. the lag as the server sees it, connection set-up included;
- CPU: the driver process's user + system seconds over the replay, in cores (CPU seconds
  per replay second) and per request; the server's beside it, and `other`: the rest of the
  machine's busy CPU meanwhile (the machine is shared: lags are only as good as it is idle);
- gc: the collector's pauses in the driver process that began between the first request's
  due time and the last send (count, longest).

    .venv/bin/python benchmarks/send_accuracy.py [--rates 50 200 800] [--seconds 20]
        [--trace PATH] [--reply-tokens N] [--itl-ms MS]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvexp.clock import Clock  # noqa: E402
from kvexp.results.records import InstanceHandle, RequestRow  # noqa: E402
from kvexp.workloads.driver import run_workload  # noqa: E402
from kvexp.workloads.trace_prompts import TracePrompts, trace_request_specs  # noqa: E402
from kvexp.workloads.traces import TraceOptions, plan_trace  # noqa: E402

FULL_TRACE = Path("/work/shared/traces/azure2023_conv.csv")
EXCERPT = ROOT / "kvexp" / "workloads" / "trace_data" / "azure2023_conv.csv"
VOCAB = 2000  # conf/model/tiny.yaml


class GcPauses:
    """Python's garbage-collector pauses (gc.callbacks): (start monotonic, seconds) each."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.monotonic()
        else:
            self.pauses.append((self._t0, time.monotonic() - self._t0))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)


def busy_cores() -> float:
    """The whole machine's busy CPU seconds so far (every core; idle and iowait left out)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class Result:
    """One rate's replay, as measured (lags in seconds)."""

    rate: float
    n: int
    ok: int
    send_rate: float  # (n - 1) / (last send - first send), req/s
    lag: np.ndarray
    arrival_lag: np.ndarray
    cpu_s: float
    server_cpu_s: float
    other_cpu_s: float  # everything else on the machine meanwhile
    wall_s: float
    gc_pauses: list[float]  # seconds, those that began between the first due and last send


def start_server(reply_tokens: int | None, itl_ms: float) -> tuple[subprocess.Popen[str], str]:
    """benchmarks/fast_server.py in its own process; (process, base URL)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fast_server.py"), "--itl-ms", str(itl_ms)]
    if reply_tokens is not None:
        cmd += ["--tokens", str(reply_tokens)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"fast_server.py did not print its port (got {line!r})")
    return proc, f"http://127.0.0.1:{int(line[1])}"


def server_log(url: str) -> list[list[object]]:
    """The fast server's request log since the last call (clears it)."""
    with urllib.request.urlopen(url + "/log", timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def replay(trace: Path, rate: float, seconds: float, url: str, server_pid: int,
           max_model_len: int | None) -> Result:
    """Replay the first rate x seconds requests of `trace` at mean rate `rate`."""
    n = max(2, round(rate * seconds))
    plan = plan_trace(trace, TraceOptions(max_requests=n, target_rate=rate,
                                          max_model_len=max_model_len))
    specs = trace_request_specs(plan.requests, "a", TracePrompts(VOCAB))
    instances = {"a": InstanceHandle("a", url, served_model="fast")}
    server_log(url)  # cleared
    server = psutil.Process(server_pid)
    clock = Clock()
    srv0, cpu0, t0 = sum(server.cpu_times()[:2]), time.process_time(), time.monotonic()
    busy0 = busy_cores()
    with GcPauses() as gcp:
        rows: list[RequestRow] = run_workload(specs, instances, clock, progress=False)
    wall = time.monotonic() - t0
    cpu, srv = time.process_time() - cpu0, sum(server.cpu_times()[:2]) - srv0
    other = busy_cores() - busy0 - cpu - srv
    to_mono = time.monotonic() - clock.now()
    log = server_log(url)
    # the server's log names no request: pair the k-th arrival with the k-th due time
    sched = np.sort([r.scheduled_time + to_mono for r in rows])
    arrivals = np.sort([float(e[1]) for e in log])  # type: ignore[arg-type]
    k = min(len(sched), len(arrivals))
    sent = np.sort([r.sent_time for r in rows])
    last_sent = float(sent[-1]) + to_mono if len(sent) else 0.0
    return Result(
        rate=rate, n=len(rows), ok=sum(r.ok for r in rows),
        send_rate=(len(sent) - 1) / float(sent[-1] - sent[0]) if sent[-1] > sent[0] else 0.0,
        lag=np.array([r.send_lag_s for r in rows]),
        arrival_lag=arrivals[:k] - sched[:k], cpu_s=cpu, server_cpu_s=srv, other_cpu_s=other,
        wall_s=wall, gc_pauses=[d for t, d in gcp.pauses
                                if len(sched) and sched[0] <= t <= last_sent],
    )


def table(results: list[Result]) -> str:
    """The printed table: one row per rate, lags in ms."""
    def ms(a: np.ndarray) -> str:
        if not len(a):
            return f"{'n/a':>7} {'n/a':>7} {'n/a':>7}"
        q = np.percentile(a, [50, 99]) * 1e3
        return f"{q[0]:7.2f} {q[1]:7.2f} {a.max() * 1e3:7.2f}"

    head = (f"{'rate':>5} {'sent/s':>7} {'reqs':>6} {'ok':>6} | {'send lag p50':>12} "
            f"{'p99':>7} {'max':>7} | {'arrival p50':>11} {'p99':>7} {'max':>7} | "
            f"{'cores':>5} {'ms/req':>6} {'srv':>4} {'other':>5} | {'gc n':>5} {'gc max':>6}")
    lines = [head]
    for r in results:
        lines.append(
            f"{r.rate:5g} {r.send_rate:7.1f} {r.n:6d} {r.ok:6d} | {ms(r.lag):>28} | "
            f"{ms(r.arrival_lag):>27} | {r.cpu_s / r.wall_s:5.2f} {r.cpu_s / r.n * 1e3:6.2f} "
            f"{r.server_cpu_s / r.wall_s:4.2f} {max(r.other_cpu_s, 0.0) / r.wall_s:5.2f} | "
            f"{len(r.gc_pauses):5d} {max(r.gc_pauses, default=0.0) * 1e3:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0, 800.0])
    ap.add_argument("--seconds", type=float, default=20.0, help="replay seconds per rate")
    ap.add_argument("--trace", type=Path,
                    default=FULL_TRACE if FULL_TRACE.exists() else EXCERPT)
    ap.add_argument("--reply-tokens", type=int, default=None,
                    help="tokens per reply (default: each request's traced output length)")
    ap.add_argument("--itl-ms", type=float, default=0.0,
                    help="gap between the server's token events (default: all at once)")
    ap.add_argument("--max-model-len", type=int, default=None,
                    help="clip traced lengths to this (default: no fitting)")
    args = ap.parse_args(argv)
    proc, url = start_server(args.reply_tokens, args.itl_ms)
    try:
        reply = (f"{args.reply_tokens} tokens" if args.reply_tokens is not None
                 else "the traced output length")
        print(f"trace: {args.trace}; server: benchmarks/fast_server.py (local, answers at "
              f"once: {reply} as SSE events, {args.itl_ms:g} ms apart); client: kvexp's "
              f"driver (http11); {os.cpu_count()} CPUs; lags in ms", flush=True)
        results = []
        for rate in args.rates:
            results.append(replay(args.trace, rate, args.seconds, url, proc.pid,
                                  args.max_model_len))
        print(table(results))
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
