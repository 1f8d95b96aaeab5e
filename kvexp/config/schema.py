"""The top-level `Config` (each key's role declared beside it), `ConfigError`, and their
registration in Hydra's ConfigStore."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from kvexp.config.capacity import CapacityConfig, MixConfig
from kvexp.config.engine import EngineConfig
from kvexp.config.groups import (
    AllocatorConfig,
    ModelConfig,
    SamplerConfig,
    SloConfig,
    WorkloadConfig,
)


class ConfigError(ValueError):
    """A config value out of range or inconsistent; the message says which and why."""


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
    mix: MixConfig = field(default_factory=MixConfig)  # N instances made from `model`
    # read by the capacity search (experiment=capacity), by no point
    capacity: CapacityConfig = field(default_factory=CapacityConfig, metadata=NO_RESULT)
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
    cs.store(group="mix", name="mix_schema", node=MixConfig)
    cs.store(group="capacity", name="capacity_schema", node=CapacityConfig)
