"""kvexp's driver as a load generator process: one schedule, its rows written as JSON.

The schedule is one of kvexp's own: constant rate is `bursty` with one request per wave,
`idle_s = 1 / rate` apart and no chaining; Poisson is `poisson` with `num_requests`.
Prompts are random token ids (completions API), replies `max_tokens` long (ignore_eos).
Times in the output are converted to `time.monotonic()` (system-wide on Linux), so they
line up with the fast server's log and vLLM's `start_times`.

    .venv/bin/python benchmarks/kvexp_client.py URL RATE N OUT.json [--arrivals poisson]
        [--driver FILE]   (run_workload from FILE, e.g. `git show REV:kvexp/workloads/driver.py`)
        [--http aiohttp]  (the driver with aiohttp in place of its http11 client)
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvexp.clock import Clock
from kvexp.config import WorkloadConfig
from kvexp.results.records import InstanceHandle, RequestRow, RequestSpec
from kvexp.workloads.driver import run_workload
from kvexp.workloads.schedules import build_schedule

VOCAB = 2000  # conf/model/tiny.yaml


def schedule(
    rate: float, n: int, arrivals: str, input_len: int, output_len: int
) -> list[RequestSpec]:
    """`n` requests at `rate` req/s, from kvexp's schedule kinds."""
    common: dict[str, Any] = dict(
        api="completions", max_tokens=output_len, temperature=0.0, ignore_eos=True,
        random_input_len=input_len, lead_in_s=0.0, tail_s=0.0, seed=0,
    )
    if arrivals == "constant":
        w = WorkloadConfig(kind="bursty", waves=n, burst_size=1, idle_s=1.0 / rate,
                           wait_for_wave=False, **common)
    elif arrivals == "poisson":
        w = WorkloadConfig(kind="poisson", rate=rate, duration_s=None, num_requests=n, **common)
    else:
        raise ValueError(f"arrivals must be constant or poisson, not {arrivals!r}")
    return build_schedule(w, ["a"], {"a": VOCAB})


def load_driver(path: Path) -> Callable[..., list[RequestRow]]:
    """`run_workload` of another driver file (e.g. an earlier version, from git show)."""
    spec = importlib.util.spec_from_file_location("kvexp_driver_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_workload  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("rate", type=float)
    ap.add_argument("n", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--arrivals", choices=("constant", "poisson"), default="constant")
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--progress", action="store_true", help="show the driver's progress bar")
    ap.add_argument("--profile", type=Path, help="write cProfile stats (CPU time) here")
    ap.add_argument("--driver", type=Path, help="take run_workload from this file instead")
    ap.add_argument("--http", choices=("http11", "aiohttp"), default="http11",
                    help="the driver's HTTP client (aiohttp: benchmarks/aiohttp_transport.py)")
    args = ap.parse_args()
    if args.http == "aiohttp":
        from aiohttp_transport import install  # beside this file

        install()

    specs = schedule(args.rate, args.n, args.arrivals, args.input_len, args.output_len)
    instances = {"a": InstanceHandle("a", args.url, served_model="fast")}
    clock = Clock()
    prof = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall
    if prof:
        prof.enable()
    run = load_driver(args.driver) if args.driver else run_workload
    rows = run(specs, instances, clock, progress=args.progress)
    if prof:
        prof.disable()
        prof.dump_stats(args.profile)
    to_mono = time.monotonic() - clock.now()
    out = [
        {
            "scheduled": r.scheduled_time + to_mono,
            "sent": r.sent_time + to_mono,
            "end": (r.end_time or r.sent_time) + to_mono,
            "lag": r.send_lag_s,
            "ok": r.ok,
            "tokens": r.completion_tokens,
            "error": r.error,
        }
        for r in rows
    ]
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
