"""A run's results as the sim's calibration reads them: points, server logs, figures.

A point folder holds config.yaml, point.json, summary.parquet, requests.parquet,
memory.parquet and logs/<instance>.log (kvexp's layout, real or sim engine alike; a point
on shared servers has attach.json instead, naming the key of the servers' folder in the
sweep, which holds the logs). A `mix` point's instances are made as kvexp made them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

from kvexp.config import resolve_instances, to_config
from kvexp.sweep.state import servers_home

GiB = 1 << 30
MiB = 1 << 20
VLLM_MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs (what its profiling run sizes)
# vLLM's profile line, and the sim's start line (kvexp/engines/sim/__main__.py)
VLLM_WEIGHTS = re.compile(
    r"Actual usage is ([\d.]+) GiB for weight, ([\d.]+) GiB for peak activation")
SIM_PARTS = re.compile(r"weights ([\d,]+) MiB, activations ([\d,]+) MiB")


@dataclass
class Instance:
    name: str
    model: dict[str, Any]
    allocator: dict[str, Any]
    max_batch: int
    log: str


@dataclass
class Point:
    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    summary: dict[str, Any]
    requests: pd.DataFrame
    memory: pd.DataFrame
    instances: list[Instance]

    @property
    def engine(self) -> str:
        return str(self.meta.get("engine", "?"))

    @property
    def runner(self) -> str:
        """vLLM's model runner its servers ran: v1 (kvcached needs it, or
        VLLM_USE_V2_MODEL_RUNNER=0 for all), v2 (vLLM 0.26's default), or sim."""
        if self.engine == "sim":
            return "sim"
        for s in self.meta.get("servers", []):
            kind = next((i.allocator.get("kind") for i in self.instances
                         if i.name == s.get("name")), None)
            if kind != "kvcached" and (s.get("env") or {}).get("VLLM_USE_V2_MODEL_RUNNER") != "0":
                return "v2"
        return "v1"


def _max_batch(argv: list[str], sim: dict[str, Any], engine: str) -> int:
    if engine == "sim":
        return int(sim.get("max_batch", VLLM_MAX_NUM_SEQS))
    for i, a in enumerate(argv[:-1]):
        if a == "--max-num-seqs":
            return int(argv[i + 1])
    return VLLM_MAX_NUM_SEQS


def mix_items(config: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, model, allocator) of each instance a `mix` point ran, as kvexp made them."""
    return [(i.name, dataclasses.asdict(i.model), dataclasses.asdict(i.allocator))
            for i in resolve_instances(to_config(OmegaConf.create(config)))]


def load_point(path: Path) -> Point:
    """One point folder; ValueError naming the file that is missing."""
    path = Path(path)
    for name in ("config.yaml", "point.json", "summary.parquet", "requests.parquet",
                 "memory.parquet"):
        if not (path / name).is_file():
            raise ValueError(f"{path}: not a kvexp point folder (no {name})")
    config = yaml.safe_load((path / "config.yaml").read_text())
    meta = json.loads((path / "point.json").read_text())
    engine = str(meta.get("engine", ""))
    argvs = {s["name"]: s.get("argv", []) for s in meta.get("servers", [])}
    sim = (config.get("engine") or {}).get("sim") or {}
    insts = []
    if (config.get("mix") or {}).get("n"):  # N copies made by the mix (capacity points)
        items = mix_items(config)
    elif config.get("instances"):
        items = [(n, i["model"], {**config["allocator"], **(i.get("allocator") or {})})
                 for n, i in config["instances"].items()]
    else:
        items = [(next(iter(argvs), config["model"]["name"]), config["model"],
                  config["allocator"])]
    logs = path / "logs"
    if (path / "attach.json").is_file():  # a shared server's log lies with the server
        attach = json.loads((path / "attach.json").read_text())
        logs = servers_home(path.parent, str(attach["key"])) / "logs"
        argvs = {s["name"]: s.get("argv", []) for s in attach.get("servers", [])} or argvs
    for name, model, alloc in items:
        log = logs / f"{name}.log"
        insts.append(Instance(name, model, alloc, _max_batch(argvs.get(name, []), sim, engine),
                              log.read_text(errors="replace") if log.is_file() else ""))
    summary = pd.read_parquet(path / "summary.parquet").iloc[0].to_dict()
    return Point(path, config, meta, summary, pd.read_parquet(path / "requests.parquet"),
                 pd.read_parquet(path / "memory.parquet"), insts)


def find_points(root: Path) -> list[Point]:
    """Every ok point under `root` (a point folder, a sweep folder, or folders of sweeps)."""
    root = Path(root)
    dirs = [root] if (root / "point.json").is_file() else sorted(
        p.parent for p in root.rglob("point.json") if "previous" not in p.parts)
    points = [load_point(d) for d in dirs]
    points = [p for p in points if p.meta.get("status") == "ok"]
    if not points:
        raise ValueError(f"{root}: no ok kvexp point found")
    return points


def logged_parts(inst: Instance) -> tuple[int, int] | None:
    """(weights, activation peak) bytes from the server log (vLLM's profile line or the
    sim's start line), or None if the log has neither."""
    if m := VLLM_WEIGHTS.search(inst.log):
        return int(float(m[1]) * GiB), int(float(m[2]) * GiB)
    if m := SIM_PARTS.search(inst.log):
        return int(m[1].replace(",", "")) * MiB, int(m[2].replace(",", "")) * MiB
    return None


def device_base(point: Point) -> tuple[int, int]:
    """(bytes to subtract from NVML's used, the driver's reservation): NVML v2 reports the
    reservation apart (base 0); v1 counts it in used, read before any server started."""
    mem = point.memory
    used = mem[mem.metric == "device_used_bytes"].sort_values("time")
    reserved = mem[mem.metric == "device_reserved_bytes"]
    if len(reserved):
        return 0, int(reserved.value.iloc[0])
    if not len(used):
        raise ValueError(f"{point.path}: memory.parquet has no device_used_bytes")
    first = int(used.value.iloc[0])
    return first, first


def device_total(point: Point) -> int:
    total = point.memory[point.memory.metric == "device_total_bytes"]
    if not len(total):
        raise ValueError(f"{point.path}: memory.parquet has no device_total_bytes")
    return int(total.value.iloc[0])


def decode_events(point: Point, instance: str) -> pd.DataFrame:
    """One row per single-token stream event of `instance`: its gap (s) and the requests
    in the engine then (sent, not yet ended), as `itl_s`, `running`, `context_tokens`."""
    req = point.requests
    req = req[(req.instance == instance) & req.ok].reset_index(drop=True)
    sent, end = req.sent_time.to_numpy(), req.end_time.to_numpy()
    rows = []
    for r in req.itertuples():
        itl = np.asarray(r.itl_s, dtype=float)
        per = np.asarray(r.tokens_per_event, dtype=float)
        if len(itl) == 0:
            continue
        if len(per) == 0:  # no continuous_usage_stats: infer from the chunk count
            per = _one_token_chunks(len(itl) + 1, r.completion_tokens)
        ends = r.first_token_time + np.cumsum(itl)
        mids = ends - itl / 2
        after = per[1:1 + len(itl)] if len(per) > len(itl) else per[:len(itl)]
        for k in np.flatnonzero(after == 1):  # gap k ends at event k + 1
            live = (sent <= mids[k]) & (end >= mids[k])
            rows.append((itl[k], int(live.sum()), r.prompt_tokens + k + 1))
    return pd.DataFrame(rows, columns=["itl_s", "running", "context_tokens"])


def _one_token_chunks(chunks: int, tokens: float | None) -> np.ndarray:
    """Tokens per chunk when the stream did not say (the driver's default since it asks no
    `continuous_usage_stats`): one each when there are as many chunks as tokens; with one
    chunk more (a role-only or finish-only chunk), one each but for the first and last gap's
    far ends, which are left out (0); otherwise unknown (all 0: the request is not used)."""
    per = np.zeros(chunks)
    if tokens is None or tokens != tokens:
        return per
    extra = chunks - int(tokens)
    if extra in (0, 1):
        per[:] = 1.0
    if extra == 1 and chunks > 2:
        per[1] = per[-1] = 0.0
    return per


def figures(point: Point) -> dict[str, float]:
    """What the calibration is judged on: device peak and idle (GiB, as nvidia-smi), decode
    throughput (output tokens/s while any request decodes) and TPOT p50 (ms)."""
    base, _ = device_base(point)
    req = point.requests[point.requests.ok]
    spans = sorted(zip(req.first_token_time, req.end_time, strict=True))
    busy, cur_start, cur_end = 0.0, None, None
    for a, b in spans:  # the union of decode intervals
        if cur_end is None or a > cur_end:
            busy += (cur_end - cur_start) if cur_end is not None else 0.0
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    busy += (cur_end - cur_start) if cur_end is not None else 0.0
    decoded = float((req.completion_tokens - 1).clip(lower=0).sum())
    return {
        "peak_gib": (float(point.summary["peak_device_gib"]) * GiB - base) / GiB,
        "idle_gib": (float(point.summary["idle_device_gib"]) * GiB - base) / GiB,
        "decode_tok_s": decoded / busy if busy > 0 else float("nan"),
        "tpot_p50_ms": float(req.tpot_s.median()) * 1000,
    }
