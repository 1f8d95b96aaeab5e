"""Instances on one simulated GPU share its compute: a "GPU busy until" counter beside
the device file.

`<device>.steps` holds one little-endian float64: the wall-clock time until which the
simulated GPU is busy with the GPU parts of steps already issued by the servers of the
device. A step's CPU part (the step overhead, per-sequence costs) runs on its own
server and is never shared; its GPU part starts when both its CPU part is done and the
GPU is free, and moves the counter on by its own length. This is work-conserving, as
time slicing is: N instances stepping in lockstep take N x the GPU part each, one alone
(or ones whose GPU parts do not meet) pay nothing. Every step takes the file's flock
for one read and one write (tests/test_sim_sharing.py measures the cost).
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

BUSY = struct.Struct("<d")


def board_path(device_path: Path) -> Path:
    return Path(device_path).with_name(Path(device_path).name + ".steps")


def gpu_start(now: float, cpu_s: float, busy_until: float) -> float:
    """When a step issued at `now` starts on the GPU: after its CPU part and the queue."""
    return max(now + cpu_s, busy_until)


class StepBoard:
    """The shared counter of the simulated device at `device_path`."""

    def __init__(self, device_path: Path) -> None:
        self.path = board_path(device_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)

    def step(self, now: float, cpu_s: float, gpu_s: float) -> float:
        """Issue a step at `now` (CPU part `cpu_s`, then `gpu_s` of GPU work) and return
        its duration, the wait for the GPU included."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(self._fd, BUSY.size, 0)
            busy = BUSY.unpack(raw)[0] if len(raw) == BUSY.size else 0.0
            end = gpu_start(now, cpu_s, busy) + gpu_s
            os.pwrite(self._fd, BUSY.pack(end), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return end - now

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
