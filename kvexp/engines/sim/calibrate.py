"""`python -m kvexp calibrate RESULTS_DIR... [--out FILE]`: fit the sim to a real run.

Step time (kvexp/engines/sim/engine.py): every single-token stream gap of a request is
one engine step; the requests in the engine at its middle are the batch. The gap less
the step's roofline (weights + the batch's KV read at the GPU's bandwidth) is fitted as
`step_overhead_ms + step_per_seq_ms x batch` by least squares over the median gap of each
batch size (medians: a gap that spans another request's prefill is an outlier). The
roofline's efficiency is not fitted (it is kept as given): decode on these shapes is
~98% CPU-side, so the gaps do not identify it.

Memory (kvexp/engines/sim/memory.py), from single-instance points:
- `sampler_logit_copies` from the activation peak vLLM logs at start-up ("X GiB for peak
  activation"), less the shape's profiling-step activations, over max_num_seqs x vocab x 4 B;
- `context_mb` from a static point: idle device memory (as nvidia-smi) less its pool,
  gpu_memory_utilization x (NVML total - the driver's reservation);
- `kvcached_runtime_mb` from a kvcached point: idle device memory less context, weights,
  activations and the KV the segment held at idle.
Output: a YAML of `engine.sim` settings (`sim:`) with what it was fitted on (`fit:`);
`engine.sim.calibration=FILE` loads it (its keys override the sim's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kvexp.config import ModelConfig, SimEngineConfig
from kvexp.engines.sim.footprint import PROFILE_TOKENS
from kvexp.engines.sim.gpus import get_gpu
from kvexp.engines.sim.results import (
    GiB,
    MiB,
    Point,
    decode_events,
    device_base,
    device_total,
    figures,
    find_points,
    logged_parts,
)

FITTED = ("step_overhead_ms", "step_per_seq_ms", "sampler_logit_copies", "context_mb",
          "kvcached_runtime_mb")
MIN_SHARE = 0.02  # share of all gaps a batch size needs to count in the step fit


def _model(d: dict[str, Any]) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in names})


def fit_step(points: list[Point], gpu_name: str, efficiency: float = 1.0) -> dict[str, Any]:
    """(overhead, per-sequence) ms of a step, from every instance's stream gaps."""
    gpu = get_gpu(gpu_name)
    by_batch: dict[int, list[float]] = {}
    for p in points:
        for inst in p.instances:
            model = _model(inst.model)
            ev = decode_events(p, inst.name)
            if p.engine == "sim":  # a sim run's gaps are in its scaled time
                ev.itl_s = ev.itl_s / float(p.config["engine"]["sim"].get("time_scale", 1.0))
            read = model.weight_bytes + ev.context_tokens * ev.running * model.kv_bytes_per_token
            cpu = ev.itl_s - read / gpu.mem_bandwidth_bytes_s / efficiency
            for n, gap in zip(ev.running, cpu, strict=True):
                by_batch.setdefault(int(n), []).append(float(gap))
    total = sum(len(g) for g in by_batch.values())
    sizes = sorted(n for n, g in by_batch.items() if len(g) >= max(1, MIN_SHARE * total))
    if len(sizes) < 2:
        raise ValueError(
            f"the step fit needs stream gaps at 2 or more batch sizes ({MIN_SHARE:.0%}+ of the "
            f"gaps each); these results have {sizes or 'none'}")
    x = np.array(sizes, dtype=float)
    y = np.array([np.median(by_batch[n]) for n in sizes]) * 1000
    w = np.array([len(by_batch[n]) for n in sizes], dtype=float)
    per_seq, overhead = np.polyfit(x, y, 1, w=w)
    resid = y - (overhead + per_seq * x)
    return {
        "step_overhead_ms": round(float(overhead), 3),
        "step_per_seq_ms": round(max(0.0, float(per_seq)), 4),
        "batch_sizes": [int(n) for n in sizes],
        "median_gap_ms": [round(float(v), 2) for v in y],
        "gaps": int(sum(len(by_batch[n]) for n in sizes)),
        "rms_residual_ms": round(float(np.sqrt(np.mean(resid**2))), 3),
    }


def _copies(model: ModelConfig, activation: int, max_batch: int) -> float:
    per_token = (4 * model.hidden_size + 2 * model.intermediate_size) * model.dtype_bytes
    return (activation - PROFILE_TOKENS * per_token) / (max_batch * model.vocab_size * 4)


def fit_memory(points: list[Point]) -> dict[str, Any]:
    """The memory constants from single-instance points (static and kvcached)."""
    single = [p for p in points if len(p.instances) == 1]
    copies, contexts, runtimes = [], [], []
    for p in single:
        inst = p.instances[0]
        if (parts := logged_parts(inst)) is not None:
            copies.append(_copies(_model(inst.model), parts[1], inst.max_batch))
    for p in single:
        if p.instances[0].allocator.get("kind") != "static":
            continue
        base, reserved = device_base(p)
        util = float(p.instances[0].allocator["gpu_memory_utilization"])
        idle = float(p.summary["idle_device_gib"]) * GiB - base
        contexts.append(idle - util * (device_total(p) - reserved))
    if not copies or not contexts:
        raise ValueError("the memory fit needs a single-instance static point with its server "
                         "log (vLLM's 'peak activation' line): none among these results")
    out: dict[str, Any] = {
        "sampler_logit_copies": round(float(np.mean(copies)), 3),
        "context_mb": round(float(np.mean(contexts)) / MiB, 1),
    }
    for p in single:
        inst = p.instances[0]
        if inst.allocator.get("kind") != "kvcached" or (parts := logged_parts(inst)) is None:
            continue
        base, _ = device_base(p)
        idle = float(p.summary["idle_device_gib"]) * GiB - base
        model = _model(inst.model)
        kv = float(p.summary["idle_kv_held_gib"]) * GiB
        runtime = idle - out["context_mb"] * MiB - model.weight_bytes - parts[1] - kv
        runtimes.append(runtime)
    if runtimes:
        out["kvcached_runtime_mb"] = round(float(np.mean(runtimes)) / MiB, 1)
    out["points"] = {"activation": len(copies), "static": len(contexts),
                     "kvcached": len(runtimes)}
    return out


PARTS = ("step", "memory")


def calibrate(dirs: list[Path], gpu: str | None = None,
              parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """Fitted `sim` settings and what they were fitted on. Points whose servers ran vLLM's
    model runner V2 are left out (kvexp runs V1 for both allocators: kvcached needs it).

    `parts`: what to fit; `("step",)` fits the step alone, e.g. from capacity runs, which
    have no single-instance point for the memory fit (the sim keeps its memory constants)."""
    if not parts or set(parts) - set(PARTS):
        raise ValueError(f"--fit: {list(parts)}; choose from {', '.join(PARTS)}")
    found = [p for d in dirs for p in find_points(d)]
    points = [p for p in found if p.runner != "v2"]
    if not points:
        raise ValueError("every point found ran vLLM's model runner V2; the sim models V1")
    gpu = gpu or str(((points[0].config.get("engine") or {}).get("sim") or {}).get("gpu", "h200"))
    step = fit_step(points, gpu) if "step" in parts else {}
    memory = fit_memory(points) if "memory" in parts else {}
    sim = {k: v for k, v in {**step, **memory}.items() if k in FITTED}
    fit: dict[str, Any] = {
        "results": [str(p.path) for p in points],
        "left_out_v2_runner": [str(p.path) for p in found if p.runner == "v2"],
        "engines": sorted({p.engine for p in points}),
        "gpu": gpu,
        "fitted": list(parts),
        "instances_per_point": sorted({len(p.instances) for p in points}),
    }
    if step:
        fit["step"] = {k: v for k, v in step.items() if k not in FITTED}
    if memory:
        fit["memory"] = {"points": memory["points"]}
    return {"sim": sim, "fit": fit}


def load_calibration(path: Path) -> dict[str, Any]:
    """The `sim` settings of a calibration file; ValueError names a key the sim lacks."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"engine.sim.calibration: no file {path}")
    data = yaml.safe_load(path.read_text()) or {}
    sim = data.get("sim")
    if not isinstance(sim, dict):
        raise ValueError(f"engine.sim.calibration: {path} has no 'sim:' mapping")
    known = {f.name for f in dataclasses.fields(SimEngineConfig)} - {"calibration"}
    if bad := sorted(set(sim) - known):
        raise ValueError(f"engine.sim.calibration: {path}: unknown sim key(s) {bad}")
    return sim


def _key(p: Point) -> tuple[Any, ...]:
    c = p.meta.get("choices") or {}
    return c.get("allocator"), c.get("models"), c.get("burst_size")


def compare_table(real_dirs: list[Path], sim_dirs: list[Path]) -> list[dict[str, Any]]:
    """Real against sim figures per (allocator, models, burst size): each the median over
    that configuration's points (repeats), with the sim's error in %."""
    rows = []
    for real_dir, sim_dir in zip(real_dirs, sim_dirs, strict=True):
        groups: dict[tuple[Any, ...], tuple[list[dict], list[dict]]] = {}
        for i, d in enumerate((real_dir, sim_dir)):
            for p in find_points(d):
                groups.setdefault(_key(p), ([], []))[i].append(figures(p))
        for key, (real, sim) in groups.items():
            if not real or not sim:
                continue
            row: dict[str, Any] = {"results": real_dir.name, "allocator": key[0],
                                   "models": key[1], "burst": key[2], "repeats": len(real)}
            for k in real[0]:
                r = float(np.median([f[k] for f in real]))
                m = float(np.median([f[k] for f in sim]))
                row[k] = [round(r, 2), round(m, 2), round(100 * (m / r - 1), 1)]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvexp calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="point or sweep folders")
    parser.add_argument("--out", type=Path, help="write the settings here (else stdout)")
    parser.add_argument("--gpu", help="the simulated GPU (default: the run's engine.sim.gpu)")
    parser.add_argument("--fit", choices=[*PARTS, "all"], default="all",
                        help="fit the step time, the memory constants, or both (default)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="SIM_DIR",
                        help="instead of fitting: compare RESULTS with these sim runs")
    args = parser.parse_args(argv)
    try:
        if args.compare:
            for row in compare_table(args.results, args.compare):
                print(yaml.safe_dump(row, sort_keys=False, width=200).strip())
            return 0
        parts = PARTS if args.fit == "all" else (args.fit,)
        text = yaml.safe_dump(calibrate(args.results, args.gpu, parts), sort_keys=False)
    except ValueError as e:
        print(f"kvexp calibrate: {e}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(text)
        print(f"kvexp calibrate: wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0
