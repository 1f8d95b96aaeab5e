"""Device memory: whole-device figures and each server's share, from NVML or the sim."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from kvexp.results.records import InstanceHandle, Sample
from kvexp.samplers.process import ProcessTrees

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryFigures:
    """One read of a device's memory. `reserved` is None where the source cannot tell it
    apart (NVML v1: then `used` includes the driver's reserved memory)."""

    total: int
    used: int
    reserved: int | None
    version: int  # NVML memory-info structure version read (1 or 2); 0 for other sources


class DeviceUnavailable(Exception):
    """The device cannot be read right now (e.g. the sim's device file not written yet)."""


class NvmlUnavailable(RuntimeError):
    """NVML (pynvml or the driver library) cannot be used on this machine."""


@runtime_checkable
class DeviceMemorySource(Protocol):
    """Memory figures of one device. May raise DeviceUnavailable for 'nothing to read'."""

    def total_bytes(self) -> int: ...

    def used_bytes(self) -> int: ...

    def process_used(self) -> dict[int, int]:
        """Device bytes per pid, for processes with memory on the device."""
        ...


class NvmlSource:
    """One GPU through NVML (pynvml, from nvidia-ml-py), imported on first use."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        try:
            import pynvml
        except ImportError as e:
            raise NvmlUnavailable("pynvml is not installed (pip install nvidia-ml-py)") from e
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise NvmlUnavailable(f"NVML cannot be initialised (no NVIDIA driver?): {e}") from e
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as e:
            pynvml.nvmlShutdown()
            raise NvmlUnavailable(f"no NVIDIA device at index {index}: {e}") from e
        self._open = True
        self.memory_version = 2  # falls back to 1 where v2 is not supported

    def memory(self) -> MemoryFigures:
        """Total, used and reserved bytes from one `nvmlDeviceGetMemoryInfo` call.

        The v2 structure (`nvmlMemory_v2`, as nvidia-smi reads it) gives `used` without the
        driver's reserved memory and `reserved` apart. Where v2 is not supported (an older
        driver or nvidia-ml-py), v1 is read from then on, logged once, and `version` says 1:
        its `used` includes the reserved memory.
        """
        nvml = self._nvml
        if self.memory_version == 2:
            try:
                m = nvml.nvmlDeviceGetMemoryInfo(self._handle, version=nvml.nvmlMemory_v2)
                return MemoryFigures(int(m.total), int(m.used), int(m.reserved), 2)
            except (AttributeError, TypeError, nvml.NVMLError) as e:
                if isinstance(e, nvml.NVMLError) and not isinstance(
                    e, _v2_unsupported_errors(nvml)
                ):
                    raise
                self.memory_version = 1
                log.warning(
                    "NVML memory info v2 is not supported here (%r): reading v1, whose used "
                    "bytes include the driver's reserved memory (device_memory_info_version=1)",
                    e,
                )
        m = nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return MemoryFigures(int(m.total), int(m.used), None, 1)

    def total_bytes(self) -> int:
        return self.memory().total

    def used_bytes(self) -> int:
        return self.memory().used

    def process_used(self) -> dict[int, int]:
        """Compute and graphics processes; a pid in both counts once (the larger figure)."""
        nvml = self._nvml
        out: dict[int, int] = {}
        for query in (
            nvml.nvmlDeviceGetComputeRunningProcesses,
            nvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            try:
                procs = query(self._handle)
            except nvml.NVMLError_NotSupported:
                continue
            for p in procs:
                used = p.usedGpuMemory
                if used is None:
                    continue
                out[int(p.pid)] = max(out.get(int(p.pid), 0), int(used))
        return out

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass


def _v2_unsupported_errors(nvml: Any) -> tuple[type[BaseException], ...]:
    """The NVML errors that mean 'no v2 memory info here' (not a failing device)."""
    names = ("NVMLError_FunctionNotFound", "NVMLError_NotSupported",
             "NVMLError_ArgumentVersionMismatch")
    return tuple(getattr(nvml, n) for n in names if isinstance(getattr(nvml, n, None), type))


class DeviceSampler:
    """Device-wide `device_used_bytes` / `device_total_bytes` (instance "") and, per
    instance, `process_gpu_bytes`: the source's per-pid bytes summed over the server's
    process tree (root pid + recursive children, rescanned at most every `tree_ttl_s`).

    A source with `memory()` (NVML) is read once per tick and adds `device_reserved_bytes`
    (the driver's reserved memory, NVML v2) and `device_memory_info_version` (2, or 1 where
    only v1 could be read: then used includes reserved and there is no reserved figure)."""

    def __init__(
        self,
        source: DeviceMemorySource,
        instances: list[InstanceHandle],
        interval_s: float,
        source_name: str = "nvml",
        device_wide: bool = True,
        per_instance: bool = True,
        tree_ttl_s: float = 0.5,
    ) -> None:
        self.device = source
        self.instances = instances
        self.interval_s = interval_s
        self.source = source_name
        self.device_wide = device_wide
        self.per_instance = per_instance
        self._trees = ProcessTrees(tree_ttl_s)

    def sample(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        try:
            if self.device_wide:
                out.extend(self._device_wide(now))
            if self.per_instance:
                out.extend(self._per_instance(now))
        except DeviceUnavailable:
            return []
        return out

    def _device_wide(self, now: float) -> list[Sample]:
        memory = getattr(self.device, "memory", None)
        if not callable(memory):
            used, total = self.device.used_bytes(), self.device.total_bytes()
            return [Sample(now, self.source, "", "device_used_bytes", float(used)),
                    Sample(now, self.source, "", "device_total_bytes", float(total))]
        m: MemoryFigures = memory()
        out = [Sample(now, self.source, "", "device_used_bytes", float(m.used)),
               Sample(now, self.source, "", "device_total_bytes", float(m.total))]
        if m.reserved is not None:
            out.append(Sample(now, self.source, "", "device_reserved_bytes", float(m.reserved)))
        if m.version:
            out.append(Sample(now, self.source, "", "device_memory_info_version",
                              float(m.version)))
        return out

    def _per_instance(self, now: float) -> list[Sample]:
        instances = [i for i in list(self.instances) if i.pid is not None]
        if not instances:
            return []
        by_pid = self.device.process_used()
        out = []
        for inst in instances:
            pids = self._trees.pids(inst.pid)
            if not pids:
                continue
            total = sum(by_pid.get(pid, 0) for pid in pids)
            out.append(Sample(now, self.source, inst.name, "process_gpu_bytes", float(total)))
        return out

    def close(self) -> None:
        close = getattr(self.device, "close", None)
        if callable(close):
            close()
