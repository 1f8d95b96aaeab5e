"""A point's engine instances, resolved: the global allocator, workload and slo merged with
each instance's overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kvexp.config.groups import AllocatorConfig, ModelConfig, SloConfig, WorkloadConfig
from kvexp.config.schema import Config, ConfigError


@dataclass
class ResolvedInstance:
    """One engine instance of a point, with the global allocator and its overrides merged."""

    name: str
    model: ModelConfig
    allocator: AllocatorConfig
    port: int | None = None
    workload: WorkloadConfig | None = None  # its own workload, if it overrides the global one
    slo: SloConfig = field(default_factory=SloConfig)  # the global slo and its overrides


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
