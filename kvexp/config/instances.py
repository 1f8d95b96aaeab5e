"""A point's engine instances, resolved: the global allocator, workload and slo merged with
each instance's overrides, or the N instances of a mix."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

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
    """The point's engine instances: `instances`, a mix of `mix.n` (kvexp/capacity/mix.py),
    or one instance of `model`."""
    base_port = cfg.engine.port
    if cfg.mix.n > 0:
        return mix_instances(cfg)
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


# A mix's instances: N models on one device, each with its own share of the traffic.
#
# Instance i (named `m<i>`) takes shape `models[i % len(models)]` (conf/model names; empty =
# the config's `model`). Its rate is `n x rate x p_i`, where p_i is proportional to
# (i + 1)^-popularity (a power law over models, as in the Prism workload generator), so the
# mean rate per model stays `rate` (default: the workload's). `cv` sets the gamma
# inter-arrivals' coefficient of variation (shape 1 / cv^2). A trace workload replays the
# trace at that rate, instance i from `start_s + i x trace_offset_s`. A static instance gets
# `static_share / n` of the device (`gpu_memory_utilization`); kvcached ones share it.
MODEL_CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
RATE_KINDS = ("poisson", "gamma", "onoff")


def shares(n: int, popularity: float) -> list[float]:
    """Each model's share of the traffic: proportional to (i + 1)^-popularity, summing to 1."""
    weights = [(i + 1) ** -popularity for i in range(n)]
    total = sum(weights)
    return [w / total for w in weights]


def load_shape(name: str) -> ModelConfig:
    """A model shape from conf/model/<name>.yaml."""
    path = MODEL_CONF / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MODEL_CONF.glob("*.yaml")))
        raise ConfigError(f"mix.models: no model {name!r} in conf/model (known: {known})")
    data = OmegaConf.load(path)
    data.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), data))


def mix_instances(cfg: Config) -> list[ResolvedInstance]:
    """The `cfg.mix.n` instances of a mix (see above); ConfigError names the key that cannot
    be used."""
    m, w = cfg.mix, cfg.workload
    if cfg.instances:
        raise ConfigError("mix.n and instances are both set: a mix makes its own instances")
    if m.models:
        shapes = [load_shape(name) for name in m.models]
    elif cfg.model is not None:
        shapes = [cfg.model]
    else:
        raise ConfigError("mix.n needs a model (model=...) or mix.models")
    if m.cv is not None and w.kind != "gamma":
        raise ConfigError(f"mix.cv sets gamma inter-arrivals: use workload=gamma "
                          f"(the workload is {w.kind!r})")
    rated = w.kind in RATE_KINDS or w.kind == "trace"
    if m.rate is not None and not rated:
        raise ConfigError(f"mix.rate needs a workload with a rate ({', '.join(RATE_KINDS)}, "
                          f"trace); the workload is {w.kind!r}")
    mean = m.rate if m.rate is not None else (w.rate if w.kind in RATE_KINDS else None)
    out = []
    for i, p in enumerate(shares(m.n, m.popularity)):
        work = w
        if rated and mean is not None:
            key = "target_rate" if w.kind == "trace" else "rate"
            work = replace(work, **{key: m.n * mean * p})
        if w.kind == "trace":
            work = replace(work, start_s=w.start_s + i * m.trace_offset_s)
        if m.cv is not None:
            work = replace(work, burstiness=1.0 / m.cv**2)
        alloc = cfg.allocator
        if alloc.kind == "static":
            alloc = replace(alloc, gpu_memory_utilization=m.static_share / m.n)
        port = cfg.engine.port + i if cfg.engine.port else None
        out.append(ResolvedInstance(f"m{i}", shapes[i % len(shapes)], alloc, port,
                                    work if work is not w else None, cfg.slo))
    return out
