"""Named simulated GPUs: memory, bandwidth and compute figures for the sim's roofline."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class GpuSpec:
    name: str
    total_bytes: int  # what NVML reports as total
    mem_bandwidth_bytes_s: float
    bf16_flops: float  # dense bf16 FLOP/s
    context_bytes: int = 500 * MiB  # CUDA context of each process using the device
    reserved_bytes: int = 125 * MiB  # the driver's reservation (NVML v2 `reserved`)
    base_bytes: int = 0  # used (NVML v2, as nvidia-smi) with no process on the device


# The H200's figures are fitted to readings there (docs/h200.md): the driver reserves
# 0.60 GiB (NVML v1 counted it as used; v2 and nvidia-smi report it apart, and PyTorch's
# total excludes it), nvidia-smi shows 0 MiB used with no process, and ~650 MiB per
# server lie outside vLLM's budget (CUDA context and non-torch memory): a static pool at
# 0.55 then reads 77.5 GiB used, as nvidia-smi showed for vLLM 0.26 on its V1 model runner.
GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec(
            "h200", 143_771 * MiB, 4.8e12, 989e12, context_bytes=650 * MiB, reserved_bytes=615 * MiB
        ),
        GpuSpec("h100", 81_559 * MiB, 3.35e12, 989e12),
        GpuSpec("a100-80g", 81_920 * MiB, 2.039e12, 312e12),
        GpuSpec("l40s", 46_068 * MiB, 0.864e12, 362e12),
        GpuSpec("tiny", 4 * GiB, 0.5e12, 50e12, context_bytes=64 * MiB, reserved_bytes=32 * MiB),
    )
}


def get_gpu(name: str) -> GpuSpec:
    """The spec of a named GPU; ValueError lists the known names."""
    try:
        return GPUS[name]
    except KeyError:
        raise ValueError(f"unknown sim gpu {name!r}; known: {', '.join(GPUS)}") from None
