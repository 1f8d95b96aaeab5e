"""The runner's own time per point: a sweep's wall time beyond server start-up and workload.

Runs a small multirun with the simulated engine (or takes a finished sweep with
`--sweep DIR`) and splits every point's wall time (`job_end - job_start`, sweep side)
with the epoch times of its point.json:

    before    job_start -> clock_start: the sweep's work on the point (config, engine
              choice, shared servers), starting the point's process, its imports;
              a shared server's start-up made here is not counted in it
    setup     clock_start -> launch_time (own servers) or ready_time (shared): samplers
    start-up  ready_time - launch_time (own servers); server_ready_time -
              server_launch_time (shared, started for this point); 0 when "reused"
    lead-in   ready_time -> workload_start (workload.lead_in_s and the schedule)
    workload  workload_start -> workload_end
    tail      workload_end -> end_time (workload.tail_s)
    after     end_time -> job_end: servers stopped, samples and Parquet written, exit

overhead = wall - start-up - workload - the configured lead_in_s and tail_s. The sweep's
own time (Hydra, composing, waiting for shared servers to be idle, stopping them, the
report) is its wall time minus the points'. Then the import time of a point's process.

    .venv/bin/python benchmarks/runner_overhead.py [--sweep DIR] [override ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["engine=sim", "model=tiny", "allocator=kvcached,static", "burst_size=2,4",
         "workload.waves=1", "workload.lead_in_s=0", "workload.tail_s=0", "report=false"]
POINT_IMPORTS = "kvexp.point, kvexp.samplers, kvexp.workloads.driver, kvexp.workloads.schedules"
COLUMNS = ("wall", "before", "setup", "start-up", "lead-in", "workload", "tail", "after",
           "overhead")


def phases(meta: dict[str, Any], lead_in_s: float, tail_s: float) -> dict[str, Any]:
    """A point's wall time split into phases (seconds); see the module docstring."""
    t0, t1 = meta["job_start"], meta["job_end"]
    start = meta.get("clock_start", t0)
    ready = meta.get("ready_time", start)
    own = meta.get("launch_time") is not None and meta.get("ready_time") is not None
    shared_start = 0.0
    if own:
        startup, how, setup_end = meta["ready_time"] - meta["launch_time"], "own", meta[
            "launch_time"]
    elif meta.get("server_reused") is False and meta.get("server_launch_time") is not None:
        shared_start = meta["server_ready_time"] - meta["server_launch_time"]
        startup, how, setup_end = shared_start, "shared", ready
    else:
        startup, how, setup_end = 0.0, "reused", ready
    w0 = meta.get("workload_start", ready)
    w1 = meta.get("workload_end", w0)
    end = meta.get("end_time", w1)
    p = {
        "wall": t1 - t0,
        "before": start - t0 - shared_start,
        "setup": setup_end - start,
        "start-up": startup,
        "lead-in": w0 - ready,
        "workload": w1 - w0,
        "tail": end - w1,
        "after": t1 - end,
        "server": how,
    }
    p["overhead"] = p["wall"] - startup - p["workload"] - lead_in_s - tail_s
    return p


def sweep_table(sweep: Path) -> list[dict[str, Any]]:
    """Print the per-point table; return the points' point.json, in order."""
    print(f"{'point':>5} {'server':>7} " + " ".join(f"{c:>8}" for c in COLUMNS) + "  status")
    rows, metas = [], []
    for pj in sorted(sweep.glob("*/point.json"), key=lambda p: int(p.parent.name)):
        meta = json.loads(pj.read_text())
        if "job_end" not in meta:
            print(f"{pj.parent.name:>5} (no job_end: not finished)")
            continue
        w = OmegaConf.load(pj.parent / "config.yaml").workload
        p = phases(meta, float(w.lead_in_s), float(w.tail_s))
        rows.append(p)
        metas.append(meta)
        print(f"{pj.parent.name:>5} {p['server']:>7} "
              + " ".join(f"{p[c]:8.2f}" for c in COLUMNS) + f"  {meta.get('status')}")
    if rows:
        mean = {c: float(np.mean([r[c] for r in rows])) for c in COLUMNS}
        print(f"{'mean':>5} {'':>7} " + " ".join(f"{mean[c]:8.2f}" for c in COLUMNS))
    return metas


def sweep_own_time(metas: list[dict[str, Any]], t0: float, t1: float) -> None:
    """Where the sweep's wall time [t0, t1] (epoch) went outside its points."""
    if not metas:
        return
    points = sum(m["job_end"] - m["job_start"] for m in metas)
    first = metas[0]["job_start"] - t0
    gaps = sum(b["job_start"] - a["job_end"] for a, b in zip(metas[:-1], metas[1:], strict=True))
    idle = sum(float(m.get("servers_idle_after_s") or 0.0) for m in metas)
    last = t1 - metas[-1]["job_end"]
    wall = t1 - t0
    print(f"sweep wall {wall:.2f} s = points {points:.2f} + the sweep's own {wall - points:.2f}"
          f": {first:.2f} to the first point (Python, Hydra, composing, planning), "
          f"{gaps:.2f} between points ({idle:.2f} of it waiting for shared servers to be idle),"
          f" {last:.2f} after the last (stopping shared servers, summary, exit)")


def import_times(code: str, runs: int = 3) -> tuple[float, list[tuple[int, str]]]:
    """Best-of-`runs` wall time of `python -c code` minus `python -c pass`, and the
    packages that took longest to import (cumulative µs, -X importtime), at any depth."""
    def best(c: str) -> float:
        walls = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", c], check=True, cwd=ROOT)
            walls.append(time.perf_counter() - t)
        return min(walls)

    wall = best(code) - best("pass")
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT,
                         capture_output=True, text=True, check=True).stderr
    top: dict[str, int] = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| \s*(\S+)", line)
        if m and "." not in m.group(3) and not m.group(3).startswith("_"):
            top[m.group(3)] = max(top.get(m.group(3), 0), int(m.group(2)))
    return wall, sorted(((us, name) for name, us in top.items()), reverse=True)[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=Path, help="a finished sweep folder: no new run")
    ap.add_argument("overrides", nargs="*", help=f"instead of: {' '.join(SWEEP)}")
    args = ap.parse_args()
    t0 = t1 = 0.0
    with tempfile.TemporaryDirectory(prefix="kvexp-overhead-") as tmp:
        sweep = args.sweep or Path(tmp) / "sweep"
        if args.sweep is None:
            cmd = [sys.executable, "-m", "kvexp", "-m", *(args.overrides or SWEEP),
                   f"hydra.sweep.dir={sweep}"]
            print("sweep: " + " ".join(["python", *cmd[1:-1]]))
            t0 = time.time()
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            t1 = time.time()
            if r.returncode != 0:
                print(f"sweep exited {r.returncode}:\n{r.stderr[-2000:]}")
        metas = sweep_table(sweep)
    if t1:
        sweep_own_time(metas, t0, t1)
    wall, top = import_times(f"import {POINT_IMPORTS}")
    print(f"\nimports of a point's process ({POINT_IMPORTS}): {wall:.2f} s wall "
          "(best of 3, less a bare python); slowest packages, cumulative (nested ones "
          "counted in their importer too):")
    for us, name in top:
        print(f"  {us / 1e3:8.1f} ms  {name}")
    wall, _ = import_times("import kvexp.__main__")
    print(f"imports of the sweep's process (kvexp.__main__): {wall:.2f} s wall")


if __name__ == "__main__":
    main()
