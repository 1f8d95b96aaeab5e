"""How accurately the driver measures: TTFT/ITL error and send lag against known server delays.

Starts the delay test server in a separate process (so it does not share the driver's GIL),
sends bursts of N concurrent streaming requests with a known TTFT and inter-token gap, and
prints the measured-minus-configured errors. Figures are printed, not asserted.

    .venv/bin/python benchmarks/driver_accuracy.py [--concurrency 1 16 64] [--ttft 0.1] ...
        [--driver FILE]   (run_workload from FILE, e.g. `git show REV:kvexp/workloads/driver.py`)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.kvexp_client import load_driver  # noqa: E402
from kvexp.clock import Clock  # noqa: E402
from kvexp.results.records import InstanceHandle, RequestSpec  # noqa: E402
from kvexp.workloads.driver import run_workload  # noqa: E402


def _serve(port_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    from tests.delay_server import DelayServer

    with DelayServer() as srv:
        port_q.put(srv.port)
        stop.wait()


def _ms(values: list[float]) -> str:
    a = np.asarray(values) * 1e3
    return f"{np.percentile(a, 50):7.2f} {np.percentile(a, 99):7.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--ttft", type=float, default=0.1, help="server TTFT delay, s")
    ap.add_argument("--itl", type=float, default=0.01, help="server inter-event gap, s")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per request")
    ap.add_argument("--waves", type=int, default=3, help="bursts per concurrency level")
    ap.add_argument("--driver", type=Path,
                    help="take run_workload from this driver file (e.g. an earlier version)")
    args = ap.parse_args()
    run = load_driver(args.driver) if args.driver else run_workload

    ctx = mp.get_context("spawn")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    stop = ctx.Event()
    proc = ctx.Process(target=_serve, args=(port_q, stop), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=30)
        instances = {"a": InstanceHandle("a", f"http://127.0.0.1:{port}", served_model="m")}
        prompt = f"bench [ttft={args.ttft} itl={args.itl} n={args.tokens}]"
        print(f"server: ttft {args.ttft * 1e3:g} ms, itl {args.itl * 1e3:g} ms, "
              f"{args.tokens} tokens; {args.waves} bursts per level; errors in ms (p50 p99)")
        print(f"{'conc':>5} {'reqs':>5} {'fail':>4} | {'TTFT err':>15} | {'ITL err':>15} | "
              f"{'|ITL err|':>15} | {'send lag':>15}")
        for c in args.concurrency:
            specs = [
                RequestSpec(k * c + j, "a", 0.0, max_tokens=args.tokens, prompt=prompt, wave=k)
                for k in range(args.waves) for j in range(c)
            ]
            rows = run(specs, instances, Clock(), wait_for_wave=True, wave_gap_s=0.2,
                       progress=False)
            ok = [r for r in rows if r.ok]
            ttft_err = [r.ttft_s - args.ttft for r in ok if r.ttft_s is not None]
            itl_err = [g - args.itl for r in ok for g in r.itl_s]
            lag = [r.send_lag_s for r in rows]
            print(f"{c:5d} {len(rows):5d} {len(rows) - len(ok):4d} | {_ms(ttft_err)} | "
                  f"{_ms(itl_err)} | {_ms([abs(e) for e in itl_err])} | {_ms(lag)}")
    finally:
        stop.set()
        proc.join(timeout=10)


if __name__ == "__main__":
    main()
