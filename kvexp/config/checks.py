"""Range and cross-field checks of a composed config: every problem, each naming its key.

Hydra checks types when it composes; these check values and how keys fit together.
"""

from __future__ import annotations

import re
from pathlib import Path

from kvexp.config.capacity import CapacityConfig, MixConfig
from kvexp.config.groups import SLO_KEYS, AllocatorConfig, ModelConfig, SloConfig
from kvexp.config.instances import resolve_instances
from kvexp.config.schema import Config, ConfigError

ALLOCATOR_KINDS = ("kvcached", "static")
MODEL_SOURCES = ("offline", "hub", "local")
INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


def _check_slo(s: SloConfig, where: str) -> list[str]:
    return [f"{where}.{k} must be > 0 or null, got {getattr(s, k)}" for k in SLO_KEYS
            if getattr(s, k) is not None and getattr(s, k) <= 0]


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
    errs += check_mix(cfg.mix) + check_capacity(cfg.capacity)
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


def check_mix(m: MixConfig) -> list[str]:
    errs = []
    if m.n < 0:
        errs.append(f"mix.n must be >= 0 (0 = no mix), got {m.n}")
    if m.rate is not None and m.rate <= 0:
        errs.append(f"mix.rate must be > 0 req/s or null, got {m.rate}")
    if m.popularity < 0:
        errs.append(f"mix.popularity must be >= 0 (0 = every model equally popular), "
                    f"got {m.popularity}")
    if m.cv is not None and m.cv <= 0:
        errs.append(f"mix.cv must be > 0 or null, got {m.cv}")
    if m.trace_offset_s < 0:
        errs.append(f"mix.trace_offset_s must be >= 0, got {m.trace_offset_s}")
    if not 0 < m.static_share <= 1:
        errs.append(f"mix.static_share must be in (0, 1], got {m.static_share}")
    return errs


def check_capacity(c: CapacityConfig) -> list[str]:
    errs = []
    bad = [a for a in c.allocators if a not in ALLOCATOR_KINDS]
    if not c.allocators or bad:
        errs.append(f"capacity.allocators must list some of {ALLOCATOR_KINDS}, "
                    f"got {list(c.allocators)}")
    if c.method not in ("bisect", "grid"):
        errs.append(f"capacity.method must be bisect or grid, got {c.method!r}")
    if not 1 <= c.n_min <= c.n_max:
        errs.append(f"capacity: need 1 <= n_min ({c.n_min}) <= n_max ({c.n_max})")
    if not 0 < c.target <= 1:
        errs.append(f"capacity.target must be in (0, 1], got {c.target}")
    if not 0 < c.confidence < 1:
        errs.append(f"capacity.confidence must be in (0, 1), got {c.confidence}")
    if c.min_requests < 1:
        errs.append(f"capacity.min_requests must be >= 1, got {c.min_requests}")
    if c.max_send_lag_ms <= 0:
        errs.append(f"capacity.max_send_lag_ms must be > 0, got {c.max_send_lag_ms}")
    for k in ("plan_repeats", "confirm_repeats"):
        if getattr(c, k) < 1:
            errs.append(f"capacity.{k} must be >= 1, got {getattr(c, k)}")
    return errs
