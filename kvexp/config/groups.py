"""Schemas of the config groups a point composes: model, allocator, workload, slo, sampler
(dataclasses; their defaults and comments agree with conf/<group>/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

TUTORIAL_PROMPTS = [
    "Explain how a KV cache speeds up transformer inference.",
    "Write a short poem about GPUs sharing memory.",
    "What is the difference between paging and segmentation in operating systems?",
    "Summarize the plot of a heist movie in three sentences.",
    "Give five tips for writing readable Python code.",
    "Describe how continuous batching works in an LLM server.",
    "Why do large language models need so much GPU memory?",
    "Translate 'elastic memory for language models' into French and German.",
]


@dataclass
class ModelConfig:
    name: str = MISSING  # short name, used in folder names and labels
    hub_id: str | None = None  # e.g. Qwen/Qwen2.5-0.5B-Instruct
    source: str = "offline"  # offline (a local folder of its shape, dummy weights) | hub | local
    path: str | None = None  # folder for source=local (or where the offline folder is written)
    architecture: str = "Qwen2ForCausalLM"
    model_type: str = "qwen2"
    num_layers: int = MISSING
    num_attention_heads: int = MISSING
    num_kv_heads: int = MISSING
    head_dim: int = MISSING
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    vocab_size: int = MISSING
    max_position_embeddings: int = 32768
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    dtype: str = "bfloat16"
    max_model_len: int = 2048

    @property
    def dtype_bytes(self) -> int:
        return {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}[self.dtype]

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer: 2 x layers x kv_heads x head_dim x dtype bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def num_params(self) -> int:
        """Parameter count from the architecture figures (Qwen2/Llama-style decoder)."""
        h, i, v, layers = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        q = h * self.num_attention_heads * self.head_dim + self.num_attention_heads * self.head_dim
        kv = 2 * (h * self.num_kv_heads * self.head_dim + self.num_kv_heads * self.head_dim)
        o = self.num_attention_heads * self.head_dim * h
        mlp = 3 * h * i
        norms = 2 * h
        per_layer = q + kv + o + mlp + norms
        embed = v * h * (1 if self.tie_word_embeddings else 2)
        return layers * per_layer + embed + h

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes


@dataclass
class AllocatorConfig:
    kind: str = MISSING  # kvcached | static
    # vLLM's --gpu-memory-utilization: the static pool's share of the device; with
    # kvcached, the virtual KV capacity (physical pages are mapped on demand).
    gpu_memory_utilization: float = 0.55
    # KVCACHED_* knobs (kvcached 0.1.6 defaults); ignored by the static pool.
    page_size_mb: int = 2
    contiguous_layout: bool = True
    gpu_utilization: float = 0.95
    page_prealloc_enabled: bool = True
    min_reserved_pages: int = 5
    max_reserved_pages: int = 10
    max_cached_tokens: int = 16000
    log_level: str = "INFO"
    kv_limit_gb: float | None = None  # per-instance KV limit written to the segment (kvctl limit)

    def kvcached_env(self) -> dict[str, str]:
        """Every KVCACHED_* knob as the environment the engine reads at import."""
        return {
            "KVCACHED_PAGE_SIZE_MB": str(self.page_size_mb),
            "KVCACHED_CONTIGUOUS_LAYOUT": str(self.contiguous_layout).lower(),
            "KVCACHED_GPU_UTILIZATION": str(self.gpu_utilization),
            "KVCACHED_PAGE_PREALLOC_ENABLED": str(self.page_prealloc_enabled).lower(),
            "KVCACHED_MIN_RESERVED_PAGES": str(self.min_reserved_pages),
            "KVCACHED_MAX_RESERVED_PAGES": str(self.max_reserved_pages),
            "KVCACHED_MAX_CACHED_TOKENS": str(self.max_cached_tokens),
            "KVCACHED_LOG_LEVEL": self.log_level,
        }


@dataclass
class WorkloadConfig:
    kind: str = MISSING  # bursty | poisson | gamma | alternating | onoff | trace
    api: str = "chat"  # chat | completions
    max_tokens: int = 180  # output tokens asked per request
    temperature: float = 0.7
    ignore_eos: bool = False  # vLLM extension: always generate max_tokens
    prompts: list[str] = field(default_factory=lambda: list(TUTORIAL_PROMPTS))
    random_input_len: int | None = None  # if set: random-token prompts of this many tokens
    # bursty / alternating: waves of `burst_size` concurrent requests, `idle_s` apart
    waves: int = 3
    burst_size: int = 6
    idle_s: float = 6.0
    wait_for_wave: bool = True  # next wave's idle gap starts when the last wave finished
    # poisson / gamma / onoff: arrival rate (req/s per instance) and length
    rate: float = 2.0
    burstiness: float = 1.0  # gamma shape; 1.0 = Poisson, < 1 burstier
    duration_s: float | None = 20.0
    num_requests: int | None = None  # cap per instance (with or instead of duration_s)
    # onoff: per-instance on/off phases
    period_s: float = 20.0
    on_s: float = 10.0
    stagger_s: float = 10.0  # instance i's phases are shifted by i * stagger_s
    # trace: replay a trace file (conf/workload/trace.yaml explains each key)
    path: str | None = None  # trace file, or excerpt:NAME (kvexp/workloads/trace_data)
    format: str = "auto"  # auto | mooncake | azure | csv | jsonl | parquet
    time_column: str | None = None
    time_unit: str = "s"  # s | ms | us | datetime
    input_column: str | None = None
    output_column: str | None = None
    model_column: str | None = None
    hash_ids_column: str | None = None
    model: str | None = None  # keep only the trace rows of this model
    start_s: float = 0.0
    window_s: float | None = None
    time_scale: float = 1.0
    target_rate: float | None = None
    shared_clock: bool = True
    max_model_len: int | None = None  # null = the instance model's max_model_len
    length_policy: str = "clip"  # clip | scale | skip
    block_size: int = 512
    min_token_id: int = 100
    # run-level timing
    lead_in_s: float = 3.0  # idle time after servers are ready, before the first request
    tail_s: float = 8.0  # idle time after the last request, to see memory released
    request_timeout_s: float = 300.0
    continuous_usage_stats: bool = False  # usage on every chunk (vLLM's client: off)
    seed: int = 0


@dataclass
class SloConfig:
    """Per-request service-level limits; null = no limit. A request meets the SLO when it
    succeeded and every given metric is <= its limit (vLLM's --goodput)."""

    ttft_ms: float | None = None  # time to first token
    tpot_ms: float | None = None  # time per output token after the first
    itl_ms: float | None = None  # every inter-token gap
    e2e_s: float | None = None  # end-to-end latency


SLO_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_s")


@dataclass
class SamplerConfig:
    interval_s: float = 0.2  # default interval for every signal
    device: bool = True  # device memory (NVML on a GPU, the sim's device with engine=sim)
    device_interval_s: float | None = None
    processes: bool = True  # per-instance: GPU memory of the server's process tree + host RSS
    processes_interval_s: float | None = None
    kvcached: bool = True  # per-instance kvcached segment: limit, used, prealloc
    kvcached_interval_s: float | None = 0.01  # 100 Hz: a segment read is 24 bytes
    engine_metrics: bool = True  # the engine's Prometheus /metrics
    engine_metrics_interval_s: float | None = 1.0

    def interval(self, signal: str) -> float:
        own = getattr(self, f"{signal}_interval_s")
        return self.interval_s if own is None else own
