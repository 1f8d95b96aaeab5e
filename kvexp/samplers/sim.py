"""The simulated engine's device file as a DeviceMemorySource."""

from __future__ import annotations

import os
from pathlib import Path

from kvexp.engines.sim.device import DeviceSnapshot, SimDevice
from kvexp.samplers.device import DeviceUnavailable, MemoryFigures


class SimDeviceSource:
    """DeviceMemorySource over `kvexp.engines.sim.device.SimDevice` at `path`.

    Raises DeviceUnavailable (so the sampler records nothing) until the sim has written
    the device file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._device = SimDevice(self.path)
        self._total: int | None = None

    def snapshot(self) -> DeviceSnapshot:
        snap = self._device.snapshot()
        if snap is None:
            raise DeviceUnavailable(f"no sim device file {self.path}")
        self._total = int(snap.total_bytes)
        return snap

    def total_bytes(self) -> int:
        return self._total if self._total is not None else int(self.snapshot().total_bytes)

    def memory(self) -> MemoryFigures:
        """Total, used and the simulated driver reservation apart, like NVML v2 (version 0)."""
        snap = self.snapshot()
        return MemoryFigures(int(snap.total_bytes), int(snap.used_bytes),
                             int(snap.reserved_bytes), 0)

    def used_bytes(self) -> int:
        return int(self.snapshot().used_bytes)

    def process_used(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.snapshot().processes.items()}

    def close(self) -> None:
        pass
