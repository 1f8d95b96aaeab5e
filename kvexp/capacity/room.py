"""Does a point's set of instances fit in device memory at all? Asked before any server
starts, with the sim's memory model (kvexp/engines/sim/memory.py) of the planning device
(`engine.sim.gpu`, its `engine.sim.calibration` applied): a static split whose pools cannot
hold one max_model_len sequence, or kvcached instances whose idle footprints leave no room
for one, is an answer ("no room"), not a point to run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kvexp.engines.sim.footprint import activation_bytes, context_bytes, kv_budget_bytes
from kvexp.engines.sim.gpus import GiB, GpuSpec, get_gpu
from kvexp.engines.sim.launch import calibrated

if TYPE_CHECKING:
    from kvexp.config import Config, ResolvedInstance, SimEngineConfig


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def sequence_bytes(inst: ResolvedInstance, block_size: int) -> int:
    """KV of one max_model_len sequence, in whole blocks (vLLM's start-up check)."""
    blocks = math.ceil(inst.model.max_model_len / block_size) + 1
    return blocks * block_size * inst.model.kv_bytes_per_token


def idle_bytes(inst: ResolvedInstance, gpu: GpuSpec, sim: SimEngineConfig) -> int:
    """A kvcached instance's footprint at idle: context and kvcached's runtime, weights, the
    activation peak of start-up profiling, and its first page plus the prealloc reserve."""
    a = inst.allocator
    pages = 1 + (a.min_reserved_pages if a.page_prealloc_enabled else 0)
    page = a.page_size_mb * (1 << 20) * inst.model.num_layers
    act = activation_bytes(inst.model, sim.max_batch, sim.sampler_logit_copies)
    return context_bytes(sim, gpu, True) + inst.model.weight_bytes + act + pages * page


def no_room(cfg: Config, insts: list[ResolvedInstance]) -> str | None:
    """Why these instances cannot all start on the planning device (None: they fit)."""
    gpu = get_gpu(cfg.engine.sim.gpu)
    visible = gpu.total_bytes - gpu.reserved_bytes
    sim = calibrated(cfg.engine.sim)
    static = [i for i in insts if i.allocator.kind == "static"]
    elastic = [i for i in insts if i.allocator.kind == "kvcached"]
    for i in static:
        act = activation_bytes(i.model, sim.max_batch, sim.sampler_logit_copies)
        budget = kv_budget_bytes(gpu, i.model, i.allocator.gpu_memory_utilization, act)
        need = sequence_bytes(i, sim.block_size)
        if budget < need:
            return (f"static: no room for {len(insts)} instances: at gpu_memory_utilization "
                    f"{i.allocator.gpu_memory_utilization:.3f} each, {i.name}'s KV pool would "
                    f"be {_gib(max(budget, 0))} (weights {_gib(i.model.weight_bytes)}, "
                    f"activations {_gib(act)}), below one {i.model.max_model_len}-token "
                    f"sequence ({_gib(need)})")
    held = sum(int(i.allocator.gpu_memory_utilization * visible)
               + context_bytes(sim, gpu, False) for i in static)
    if held > visible:
        return (f"static: no room for {len(insts)} instances: their pools and CUDA contexts "
                f"take {_gib(held)} of {_gib(visible)}")
    if elastic:
        cap = int(elastic[0].allocator.gpu_utilization * visible)
        idle = held + sum(idle_bytes(i, gpu, sim) for i in elastic)
        need = max(sequence_bytes(i, sim.block_size) for i in elastic)
        if idle + need > cap:
            return (f"kvcached: no room for {len(insts)} instances: idle footprints take "
                    f"{_gib(idle)} of the {_gib(cap)} kvcached may map, leaving less than one "
                    f"{max(i.model.max_model_len for i in elastic)}-token sequence "
                    f"({_gib(need)})")
    return None
