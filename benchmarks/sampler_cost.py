"""What sampling costs: per-tick time of each sampler and the CPU it takes at 5-100 Hz.

    .venv/bin/python benchmarks/sampler_cost.py [--instances N] [--ticks N] [--seconds S]
        [--hz 5 20 50 100] [--segment-hz 100] [--segment-seconds S]

The last lines give the kvcached segment sampler alone at `--segment-hz` (100 Hz, its
default: `sampler.kvcached_interval_s` 0.01) on its own thread, as % of one core, for
1 and N instances and for instances with two KV-cache group segments (goal: under 2%).

Each instance is a real process tree (a sleeping python with a sleeping child), a
kvcached segment in a temporary shm dir and a /metrics page of vLLM's size served by
`python -m http.server` in another process. The device sampler uses a fake source (no
GPU needed) and the sim's device file. Figures are printed, not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from kvexp.clock import Clock
from kvexp.kvcached_segment import write_segment
from kvexp.results.records import InstanceHandle
from kvexp.samplers import (
    DeviceSampler,
    EngineMetricsSampler,
    KvcachedSampler,
    ProcessSampler,
    Sampler,
    SamplerGroup,
    SimDeviceSource,
)

GiB = 1 << 30
HISTOGRAMS = [
    "time_to_first_token_seconds",
    "inter_token_latency_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "request_inference_time_seconds",
    "request_prefill_time_seconds",
    "request_decode_time_seconds",
    "request_prompt_tokens",
    "request_generation_tokens",
    "iteration_tokens_total",
    "request_max_num_generation_tokens",
    "request_params_n",
    "request_params_max_tokens",
    "time_per_output_token_seconds",
]


def vllm_metrics_page() -> str:
    """A page shaped like vLLM's /metrics (gauges, counters, histograms, cache info)."""
    lab = 'engine="0",model_name="m"'
    lines = []
    for name, value in (
        ("num_requests_running", 7),
        ("num_requests_waiting", 2),
        ("kv_cache_usage_perc", 0.42),
    ):
        lines += [
            f"# HELP vllm:{name} x",
            f"# TYPE vllm:{name} gauge",
            f"vllm:{name}{{{lab}}} {value}",
        ]
    for name in ("num_preemptions", "prompt_tokens", "generation_tokens", "request_success"):
        lines += [f"# HELP vllm:{name}_total x", f"# TYPE vllm:{name}_total counter"]
        lines += [f"vllm:{name}_total{{{lab}}} 12.0", f"vllm:{name}_created{{{lab}}} 1.7e9"]
    for name in HISTOGRAMS:
        lines += [f"# HELP vllm:{name} x", f"# TYPE vllm:{name} histogram"]
        for i in range(25):
            lines.append(f'vllm:{name}_bucket{{{lab},le="{0.001 * 2**i:.6g}"}} {i * 3}.0')
        lines.append(f'vllm:{name}_bucket{{{lab},le="+Inf"}} 80.0')
        lines += [f"vllm:{name}_count{{{lab}}} 80.0", f"vllm:{name}_sum{{{lab}}} 123.4"]
    lines.append(
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",'
        'gpu_memory_utilization="0.55",num_cpu_blocks="None",num_gpu_blocks="1234"} 1.0'
    )
    for gen in range(3):
        lines.append(f'python_gc_objects_collected_total{{generation="{gen}"}} 1234.0')
    return "\n".join(lines) + "\n"


class FakeDevice:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def total_bytes(self) -> int:
        return 141 * GiB

    def used_bytes(self) -> int:
        return 40 * GiB

    def process_used(self) -> dict[int, int]:
        return {pid: GiB for pid in self.pids}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def per_tick(sampler: Sampler, ticks: int) -> tuple[float, float, float, int]:
    """p50 and p99 wall µs, mean CPU µs per tick, samples per tick."""
    sampler.sample(0.0)
    walls, n = [], 0
    cpu0 = time.process_time()
    for _ in range(ticks):
        t = time.perf_counter()
        n = len(sampler.sample(0.0))
        walls.append((time.perf_counter() - t) * 1e6)
    cpu = (time.process_time() - cpu0) * 1e6 / ticks
    q = statistics.quantiles(walls, n=100)
    return q[49], q[98], cpu, n


def cpu_fraction(make: Callable[[], list[Sampler]], seconds: float) -> tuple[float, int]:
    """CPU seconds per wall second of this process while a group runs; ticks run."""
    group = SamplerGroup(make(), Clock())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with group:
        time.sleep(seconds)
    frac = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return frac, sum(group.ticks().values())


def segment_cost(tmp: Path, instances: list[InstanceHandle], hz: float, seconds: float,
                 idle: float) -> None:
    """The kvcached segment sampler alone at `hz`: % of one core, ticks run, per-tick µs."""
    grouped = []
    for inst in instances:
        assert inst.ipc_name is not None
        write_segment(f"{inst.ipc_name}_g1", 2 * GiB, GiB, 48 << 20, shm_dir=tmp)
        grouped.append(InstanceHandle(f"{inst.name}h", inst.base_url, ipc_name=inst.ipc_name))
    print(f"\nkvcached segment sampler alone at {hz:g} Hz, own thread, {seconds:g} s each "
          "(% of one core; goal < 2%)")
    cases = {
        "1 instance, 1 segment": [InstanceHandle("one", "", ipc_name="kvexp_bench_solo")],
        f"{len(instances)} instances, 2 groups each": grouped,
    }
    write_segment("kvexp_bench_solo", 8 * GiB, GiB, 0, shm_dir=tmp)
    for name, insts in cases.items():
        frac, ticks = cpu_fraction(lambda i=insts: [KvcachedSampler(i, 1.0 / hz, shm_dir=tmp)],
                                   seconds)
        p50, p99, cpu, n = per_tick(KvcachedSampler(insts, 1.0 / hz, shm_dir=tmp), 2000)
        print(f"  {name:32} {100 * frac:6.2f}% of a core ({100 * (frac - idle):.2f}% over "
              f"idle); {ticks} ticks = {ticks / seconds:.1f} Hz; per tick p50 {p50:.0f} µs, "
              f"p99 {p99:.0f} µs, cpu {cpu:.0f} µs, {n} samples")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument("--seconds", type=float, default=3.0, help="per CPU figure")
    p.add_argument("--hz", type=float, nargs="+", default=[5.0, 20.0, 50.0, 100.0])
    p.add_argument("--segment-hz", type=float, default=100.0)
    p.add_argument("--segment-seconds", type=float, default=10.0)
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kvexp-bench-"))
    (tmp / "metrics").write_text(vllm_metrics_page())
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1", "-d", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    child = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(600)']); time.sleep(600)"
    )
    instances, pids = [], []
    device_file = tmp / "device.json"
    sim_instances = {}
    try:
        for i in range(args.instances):
            proc = subprocess.Popen([sys.executable, "-c", child])
            procs.append(proc)
            pids.append(proc.pid)
            write_segment(f"kvexp_bench_{i}", 8 * GiB, 2 * GiB, 64 << 20, shm_dir=tmp)
            instances.append(
                InstanceHandle(
                    f"m{i}", f"http://127.0.0.1:{port}", pid=proc.pid, ipc_name=f"kvexp_bench_{i}"
                )
            )
            sim_instances[f"m{i}"] = {
                "pid": proc.pid,
                "context_bytes": 500 << 20,
                "weights_bytes": GiB,
                "activation_bytes": 256 << 20,
                "kv_bytes": 2 * GiB,
            }
        device_file.write_text(
            json.dumps(
                {
                    "gpu": "h200",
                    "total_bytes": 141 * GiB,
                    "base_bytes": GiB,
                    "instances": sim_instances,
                }
            )
        )
        wait_for_port(port)
        time.sleep(0.3)

        makers: dict[str, Callable[[float], list[Sampler]]] = {
            "device (fake source)": lambda s: [DeviceSampler(FakeDevice(pids), instances, s)],
            "device (sim file)": lambda s: [
                DeviceSampler(SimDeviceSource(device_file), instances, s, "sim_device")
            ],
            "process (rss)": lambda s: [ProcessSampler(instances, s)],
            "kvcached": lambda s: [KvcachedSampler(instances, s, shm_dir=tmp)],
            "engine metrics": lambda s: [EngineMetricsSampler(instances, s, timeout_s=1.0)],
        }
        print(
            f"{args.instances} instances, {args.ticks} ticks each; "
            f"/metrics page {len(vllm_metrics_page()) / 1024:.0f} KiB; cpu count {os.cpu_count()}"
            f"; load average {os.getloadavg()[0]:.2f}"
        )
        at = "".join(f"{f'CPU @{hz:g}Hz':>11}" for hz in args.hz)
        print(f"{'sampler':24} {'p50 µs':>9} {'p99 µs':>9} {'cpu µs':>9} {'samples':>8} {at}")
        for name, make in makers.items():
            (sampler,) = make(0.05)
            p50, p99, cpu, n = per_tick(sampler, args.ticks)
            sampler.close()
            fracs = [cpu_fraction(lambda m=make, hz=hz: m(1.0 / hz), args.seconds)[0]
                     for hz in args.hz]
            cols = "".join(f"{100 * f:10.2f}%" for f in fracs)
            print(f"{name:24} {p50:9.0f} {p99:9.0f} {cpu:9.0f} {n:8d} {cols}")

        def everything(interval: float) -> list[Sampler]:
            return [s for make in makers.values() for s in make(interval)]

        together = [cpu_fraction(lambda hz=hz: everything(1.0 / hz), args.seconds)
                    for hz in args.hz]
        cols = "".join(f"{100 * f:10.2f}%" for f, _ in together)
        print(f"{'all together':24} {'':9} {'':9} {'':9} {'':8} {cols}")
        idle, _ = cpu_fraction(lambda: [], args.seconds)
        ticks = ", ".join(f"{t} @{hz:g}Hz" for (_, t), hz in zip(together, args.hz, strict=True))
        print(f"(all together: {ticks} ticks in {args.seconds:g} s; idle process "
              f"{100 * idle:.2f}%)")
        print("CPU @N Hz: this process's CPU time / wall time with every signal sampled N times "
              "a second (the HTTP server is another process); cpu µs: per tick")
        segment_cost(tmp, instances, args.segment_hz, args.segment_seconds, idle)
    finally:
        for proc in procs:
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
            except psutil.NoSuchProcess:
                pass
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
