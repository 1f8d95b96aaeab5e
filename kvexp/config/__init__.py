"""Config schemas (dataclasses registered in Hydra's ConfigStore) and their validation.

Hydra checks types when it composes; `check()` checks ranges and cross-field rules, and
`to_config()` gives the runner a plain, validated `Config`. The modules, by concern:

- `groups`: the group schemas (model, allocator, workload, slo, sampler);
- `engine`: the `engine` group's schema (shared settings, the vllm and sim nodes);
- `capacity`: the `mix` and `capacity` groups' schemas and checks;
- `schema`: the top-level `Config`, each key's role, `ConfigError`, `register_configs`;
- `instances`: a point's engine instances with their overrides merged;
- `checks`: range and consistency checks, each message naming its key;
- `load`: `to_config` and the digests that name a config.
"""

from kvexp.config.capacity import CapacityConfig, MixConfig
from kvexp.config.checks import ALLOCATOR_KINDS, INSTANCE_NAME, MODEL_SOURCES, check
from kvexp.config.engine import EngineConfig, SimEngineConfig, VllmEngineConfig
from kvexp.config.groups import (
    SLO_KEYS,
    TUTORIAL_PROMPTS,
    AllocatorConfig,
    ModelConfig,
    SamplerConfig,
    SloConfig,
    WorkloadConfig,
)
from kvexp.config.instances import ResolvedInstance, resolve_instances
from kvexp.config.load import config_hash, digest, to_config
from kvexp.config.schema import (
    NO_RESULT,
    POINT_SIDE,
    Config,
    ConfigError,
    InstanceConfig,
    label_skips,
    point_side_keys,
    register_configs,
)

__all__ = [
    "ALLOCATOR_KINDS",
    "INSTANCE_NAME",
    "MODEL_SOURCES",
    "NO_RESULT",
    "POINT_SIDE",
    "SLO_KEYS",
    "TUTORIAL_PROMPTS",
    "AllocatorConfig",
    "CapacityConfig",
    "Config",
    "ConfigError",
    "EngineConfig",
    "InstanceConfig",
    "MixConfig",
    "ModelConfig",
    "ResolvedInstance",
    "SamplerConfig",
    "SimEngineConfig",
    "SloConfig",
    "VllmEngineConfig",
    "WorkloadConfig",
    "check",
    "config_hash",
    "digest",
    "label_skips",
    "point_side_keys",
    "register_configs",
    "resolve_instances",
    "to_config",
]
