"""Samplers: device memory, process trees, kvcached segments and engine metrics, on one clock.

`build_samplers` turns a SamplerConfig into samplers; `SamplerGroup` runs them.
"""

from __future__ import annotations

from pathlib import Path

from kvexp.config import SamplerConfig
from kvexp.results.records import InstanceHandle
from kvexp.samplers.base import Sampler, SamplerGroup
from kvexp.samplers.device import (
    DeviceMemorySource,
    DeviceSampler,
    DeviceUnavailable,
    NvmlSource,
    NvmlUnavailable,
)
from kvexp.samplers.kvcached import KvcachedSampler
from kvexp.samplers.metrics import EngineMetricsSampler, engine_figures, parse_prometheus
from kvexp.samplers.process import ProcessSampler, ProcessTrees
from kvexp.samplers.sim import SimDeviceSource

__all__ = [
    "DeviceMemorySource",
    "DeviceSampler",
    "DeviceUnavailable",
    "EngineMetricsSampler",
    "KvcachedSampler",
    "NvmlSource",
    "NvmlUnavailable",
    "ProcessSampler",
    "ProcessTrees",
    "Sampler",
    "SamplerGroup",
    "SimDeviceSource",
    "build_samplers",
    "engine_figures",
    "parse_prometheus",
]


def build_samplers(
    cfg: SamplerConfig,
    instances: list[InstanceHandle],
    device_source: DeviceMemorySource | None,
    device_source_name: str,
    shm_dir: Path | None = None,
) -> list[Sampler]:
    """The samplers `cfg` turns on, reading `instances` (the live list) on every tick.

    `device`: device-wide memory; `processes`: per-instance host RSS and, with a device
    source, the GPU memory of each server's process tree. Both read the device source; with
    equal intervals they share one sampler, so their timestamps coincide.
    """
    samplers: list[Sampler] = []
    if device_source is not None and (cfg.device or cfg.processes):
        dev_s, proc_s = cfg.interval("device"), cfg.interval("processes")
        if cfg.device and cfg.processes and dev_s == proc_s:
            samplers.append(DeviceSampler(device_source, instances, dev_s, device_source_name))
        else:
            if cfg.device:
                samplers.append(
                    DeviceSampler(
                        device_source, instances, dev_s, device_source_name, per_instance=False
                    )
                )
            if cfg.processes:
                samplers.append(
                    DeviceSampler(
                        device_source, instances, proc_s, device_source_name, device_wide=False
                    )
                )
    if cfg.processes:
        samplers.append(ProcessSampler(instances, cfg.interval("processes")))
    if cfg.kvcached:
        samplers.append(KvcachedSampler(instances, cfg.interval("kvcached"), shm_dir))
    if cfg.engine_metrics:
        samplers.append(EngineMetricsSampler(instances, cfg.interval("engine_metrics")))
    return samplers
