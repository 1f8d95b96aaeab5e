"""The `mix` and `capacity` groups' schemas and checks (kvexp/capacity/ reads them; defaults
and comments: conf/mix/default.yaml, conf/capacity/default.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MixConfig:
    """N model instances on one device, made from `model` (or `models`) and `workload`."""

    n: int = 0
    models: list[str] = field(default_factory=list)
    rate: float | None = None
    popularity: float = 1.0
    cv: float | None = None
    trace_offset_s: float = 0.0
    static_share: float = 0.9


@dataclass
class CapacityConfig:
    """The search for the largest N whose SLO attainment meets `target`, per allocator."""

    allocators: list[str] = field(default_factory=lambda: ["kvcached", "static"])
    method: str = "bisect"
    n_min: int = 1
    n_max: int = 12
    target: float = 0.99
    confidence: float = 0.95
    min_requests: int = 50
    max_send_lag_ms: float = 50.0
    plan_engine: str = "sim"
    plan: str | None = None
    plan_repeats: int = 1
    confirm_repeats: int = 2
    confirm: bool = True
