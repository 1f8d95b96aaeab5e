"""`engine=auto`: the real vLLM where a CUDA GPU and vllm are present, else the sim."""

from __future__ import annotations

from kvexp.config import Config


def choose_engine(cfg: Config) -> tuple[str, str]:
    """(engine kind, the reason for it, in words)."""
    kind = cfg.engine.kind
    if kind != "auto":
        return kind, f"engine={kind} was asked for"
    from kvexp.engines.vllm.launch import cuda_available, vllm_available

    gpu, gpu_why = cuda_available()
    if not gpu:
        return "sim", f"no CUDA GPU ({gpu_why})"
    vllm, vllm_why = vllm_available(cfg.engine.vllm.python)
    if not vllm:
        return "sim", f"CUDA GPU found but vllm is not importable ({vllm_why})"
    return "vllm", f"CUDA GPU found ({gpu_why}) and vllm importable ({vllm_why})"
