"""The real vLLM engine (launch.py: its command line, and whether vllm/CUDA are present)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kvexp.engines.servers import Server

AUTO_RANK = 0  # engine=auto's first choice where CUDA and vllm are present
# What a vLLM server reads: vLLM's own, kvcached's (loaded into vLLM), CUDA, NCCL and
# PyTorch, OpenMP (the CPU backend's threads), the Hugging Face hub's.
ENV_PREFIXES = ("VLLM_", "KVCACHED_", "ENABLE_KVCACHED", "CUDA_", "NCCL_", "HF_", "PYTORCH_",
                "TORCH_", "OMP_")


def build_launch(cfg: Any, inst: Any, home: Path, port: int, ipc: str | None) -> Any:
    from kvexp.engines.vllm.launch import build_vllm_launch

    return build_vllm_launch(inst, cfg.engine, Path(os.path.expanduser(cfg.models_dir)),
                             port, ipc)


def device_path(cfg: Any, home: Path) -> None:
    return None  # a real device


def device_source(cfg: Any, path: Path | None, gpu: int | None) -> tuple[Any, str]:
    if cfg.engine.vllm.device != "cuda":
        return None, ""  # vLLM on the CPU: host memory only (the process sampler)
    from kvexp.gpus import nvml_index
    from kvexp.samplers.device import NvmlSource

    # NVML numbers every GPU of the host; CUDA_VISIBLE_DEVICES says which is the point's
    return NvmlSource(nvml_index() if gpu is None else gpu), "nvml"


def uses_gpus(engine: Any) -> bool:
    return bool(engine.vllm.device == "cuda")


def shareable(cfg: Any) -> bool:
    """Not with prefix caching: a cache warmed by the previous point would change TTFT."""
    return not cfg.engine.vllm.enable_prefix_caching


def available(cfg: Any) -> tuple[bool, str]:
    from kvexp.engines.vllm.launch import cuda_available, vllm_available

    gpu, gpu_why = cuda_available()
    if not gpu:
        return False, f"no CUDA GPU ({gpu_why})"
    ok, why = vllm_available(cfg.engine.vllm.python)
    if not ok:
        return False, f"CUDA GPU found but vllm is not importable ({why})"
    return True, f"CUDA GPU found ({gpu_why}) and vllm importable ({why})"


def check(cfg: Any, insts: list[Any]) -> list[str]:
    if cfg.engine.vllm.device == "cpu" and any(i.allocator.kind == "kvcached" for i in insts):
        return ["kvcached has no CPU mode: use allocator=static with engine=vllm_cpu"]
    return []


def lacking(cfg: Any) -> dict[str, str]:
    if cfg.engine.vllm.device != "cuda":
        return {"device": "vLLM on the CPU has no device memory (host memory: processes)"}
    return {}


def start_server(spec: Any, log_path: Path) -> Server:
    return Server(spec, log_path)
