"""kvexp's idle and peak device memory beside nvidia-smi's, for the same windows of each point.

    python scripts/nvidia_smi_compare.py SWEEP_DIR NVIDIA_SMI_CSV

The CSV is `nvidia-smi --query-gpu=timestamp,memory.used,... --format=csv,noheader,nounits
-lms 200` (UTC timestamps, MiB), as scripts/gpu-steps.sh records it. For each point, idle is
the median from ready to the workload's start and peak the maximum from ready to the point's
end, both as kvexp defines them (README, "Definitions"), read from point.json's times.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd


def read_smi(path: Path) -> pd.DataFrame:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        ts, used, *_ = (p.strip() for p in line.split(","))
        t = datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
        rows.append((t.timestamp(), float(used) / 1024))
    return pd.DataFrame(rows, columns=["time", "used_gib"])


def main(sweep: Path, csv: Path) -> None:
    smi = read_smi(csv)
    print("| point | allocator | repeat | kvexp idle GiB | nvidia-smi idle GiB | kvexp peak GiB "
          "| nvidia-smi peak GiB | max abs diff GiB |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for d in sorted((p for p in sweep.iterdir() if (p / "point.json").exists()),
                    key=lambda p: int(p.name)):
        rec = json.loads((d / "point.json").read_text())
        s = pd.read_parquet(d / "summary.parquet").iloc[0]
        idle = smi[(smi.time >= rec["ready_time"]) & (smi.time <= rec["workload_start"])]
        run = smi[(smi.time >= rec["ready_time"]) & (smi.time <= rec["end_time"])]
        if idle.empty or run.empty:
            print(f"| {d.name} | {s.allocator} | {s['repeat']} | no nvidia-smi samples |")
            continue
        i_smi, p_smi = idle.used_gib.median(), run.used_gib.max()
        diff = max(abs(s.idle_device_gib - i_smi), abs(s.peak_device_gib - p_smi))
        worst = max(worst, diff)
        print(f"| {d.name} | {s.allocator} | {s['repeat']} | {s.idle_device_gib:.2f} | {i_smi:.2f} "
              f"| {s.peak_device_gib:.2f} | {p_smi:.2f} | {diff:.3f} |")
    print(f"\nlargest difference: {worst:.3f} GiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
