"""What a sim server holds on its device besides KV pages: the activation peak of vLLM's
start-up profiling, the CUDA context and non-torch memory (and kvcached's runtime), and the
KV budget that vLLM's static pool takes from `gpu_memory_utilization`."""

from __future__ import annotations

from kvexp.config import ModelConfig, SimEngineConfig
from kvexp.engines.sim.gpus import GpuSpec, MiB

PROFILE_TOKENS = 2048  # tokens of vLLM's profiling step, for the activation estimate
# The memory constants (engine.sim.sampler_logit_copies, kvcached_runtime_mb, context_mb)
# live in conf/engine/sim.yaml; `python -m kvexp calibrate` refits them from a real run.
# Their defaults were fitted to the H200 (docs/h200.md): the 2.15 / 2.17 GiB "peak
# activation" vLLM 0.26 logged for the Qwen2.5-0.5B / 1.5B shapes at max_num_seqs 256, and
# kvcached's 4.27 GiB idle in nvidia-smi, 0.28 GiB above weights + activations + KV + context.


def activation_bytes(model: ModelConfig, max_batch: int, logit_copies: float | None = None) -> int:
    """Activation peak a vLLM profiling run leaves reserved: one step of PROFILE_TOKENS
    tokens (4 x hidden + 2 x intermediate values a token) plus `logit_copies` float32
    logits buffers for `max_batch` sequences (None: engine.sim.sampler_logit_copies' default)."""
    if logit_copies is None:
        logit_copies = SimEngineConfig().sampler_logit_copies
    per_token = (4 * model.hidden_size + 2 * model.intermediate_size) * model.dtype_bytes
    logits = max_batch * model.vocab_size * 4
    return PROFILE_TOKENS * per_token + int(logit_copies * logits)


def context_bytes(sim: SimEngineConfig, gpu: GpuSpec, elastic: bool) -> int:
    """Device memory a server holds outside weights, activations and KV: the CUDA context
    and non-torch memory (`context_mb`, or the gpu's), plus kvcached's runtime if elastic."""
    base = gpu.context_bytes if sim.context_mb is None else int(sim.context_mb * MiB)
    return base + (int(sim.kvcached_runtime_mb * MiB) if elastic else 0)


def kv_budget_bytes(gpu: GpuSpec, model: ModelConfig, utilization: float, activation: int) -> int:
    """vLLM's KV budget: utilization x the memory PyTorch sees (NVML's total less what the
    driver reserves) - weights - activations. The CUDA context lies outside the budget."""
    visible = gpu.total_bytes - gpu.reserved_bytes
    return int(utilization * visible) - model.weight_bytes - activation
