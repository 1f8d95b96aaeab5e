"""Device memory: whole-device figures and each server's share, from NVML or the sim."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from kvexp.results.records import InstanceHandle, Sample
from kvexp.samplers.process import ProcessTrees


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

    def total_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total)

    def used_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

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


class DeviceSampler:
    """Device-wide `device_used_bytes` / `device_total_bytes` (instance "") and, per
    instance, `process_gpu_bytes`: the source's per-pid bytes summed over the server's
    process tree (root pid + recursive children, rescanned at most every `tree_ttl_s`)."""

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
                used = self.device.used_bytes()
                total = self.device.total_bytes()
                out.append(Sample(now, self.source, "", "device_used_bytes", float(used)))
                out.append(Sample(now, self.source, "", "device_total_bytes", float(total)))
            if self.per_instance:
                out.extend(self._per_instance(now))
        except DeviceUnavailable:
            return []
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
