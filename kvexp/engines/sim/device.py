"""A simulated GPU shared by the sim servers of one run: a JSON file guarded by flock.

Format: `{"gpu", "total_bytes", "base_bytes", "reserved_bytes", "instances": {name:
{"pid", "context_bytes", "weights_bytes", "activation_bytes", "kv_bytes"}}}`. Used is
counted as nvidia-smi (NVML v2) does: base + instances, the driver's `reserved_bytes`
apart. A file without `reserved_bytes` (older sims, whose base counted the reservation)
reads as reserved 0. Every change
takes an exclusive flock on `<path>.lock` and replaces the file atomically; reads
take a shared lock. Instances whose process has exited are dropped, as a real
driver frees a dead process's memory.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from kvexp.engines.sim.gpus import GpuSpec, MiB, get_gpu

FIELDS = ("context_bytes", "weights_bytes", "activation_bytes", "kv_bytes")


class InsufficientMemory(RuntimeError):
    """The simulated device cannot hold what an instance asked for."""


@dataclass(frozen=True)
class DeviceSnapshot:
    total_bytes: int
    used_bytes: int  # base + every instance's context, weights, activations and KV
    processes: dict[int, int]  # pid -> bytes
    instances: dict[str, int]  # instance name -> bytes
    reserved_bytes: int = 0  # the driver's reservation, not in used (NVML v2 `reserved`)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _instance_bytes(inst: dict[str, Any]) -> int:
    return sum(int(inst.get(k, 0)) for k in FIELDS)


def _used(state: dict[str, Any]) -> int:
    return int(state["base_bytes"]) + sum(_instance_bytes(i) for i in state["instances"].values())


def _usable(state: dict[str, Any]) -> int:
    """Total less the driver's reservation: what processes can have."""
    return int(state["total_bytes"]) - int(state.get("reserved_bytes", 0))


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


class SimDevice:
    """One simulated device at `path`; the first opener with a `gpu` creates the file."""

    def __init__(self, path: Path, gpu: GpuSpec | None = None) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._gpu = gpu
        if gpu is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(exclusive=True):
                if not self.path.exists():
                    self._write(
                        {
                            "gpu": gpu.name,
                            "total_bytes": gpu.total_bytes,
                            "base_bytes": gpu.base_bytes,
                            "reserved_bytes": gpu.reserved_bytes,
                            "instances": {},
                        }
                    )
                elif (name := self._read()["gpu"]) != gpu.name:
                    raise ValueError(f"device {self.path} is a {name}, not a {gpu.name}")

    @property
    def gpu(self) -> GpuSpec:
        """The device's spec (read from the file if not given; FileNotFoundError if none)."""
        if self._gpu is None:
            with self._locked(exclusive=False):
                self._gpu = get_gpu(self._read()["gpu"])
        return self._gpu

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.path)

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Apply `change` to the state under the exclusive lock; write it back."""
        with self._locked(exclusive=True):
            state = self._read()
            state["instances"] = {
                k: v for k, v in state["instances"].items() if _alive(int(v["pid"]))
            }
            result = change(state)
            self._write(state)
            return result

    def register(
        self, name: str, pid: int, context_bytes: int, weights_bytes: int, activation_bytes: int
    ) -> None:
        """Add an instance with its fixed memory; InsufficientMemory if it does not fit."""

        def change(state: dict[str, Any]) -> None:
            old = state["instances"].get(name)
            if old is not None and int(old["pid"]) != pid:
                raise ValueError(f"instance {name!r} is already on the device (pid {old['pid']})")
            state["instances"].pop(name, None)
            need = context_bytes + weights_bytes + activation_bytes
            used = _used(state)
            total = _usable(state)
            if used + need > total:
                raise InsufficientMemory(
                    f"insufficient device memory: instance {name!r} needs {_mib(need)} "
                    f"(context, weights, activations) but only "
                    f"{_mib(total - used)} of {_mib(total)} is free"
                )
            state["instances"][name] = {
                "pid": pid,
                "context_bytes": context_bytes,
                "weights_bytes": weights_bytes,
                "activation_bytes": activation_bytes,
                "kv_bytes": 0,
            }

        self._update(change)

    def try_reserve_kv(self, name: str, nbytes: int, cap_bytes: int) -> bool:
        """Add `nbytes` of KV to `name` if device used + nbytes <= cap_bytes (FCFS)."""

        def change(state: dict[str, Any]) -> bool:
            inst = state["instances"].get(name)
            if inst is None:
                raise KeyError(f"instance {name!r} is not registered on {self.path}")
            if _used(state) + nbytes > cap_bytes:
                return False
            inst["kv_bytes"] = int(inst["kv_bytes"]) + nbytes
            return True

        return bool(self._update(change))

    def release_kv(self, name: str, nbytes: int) -> None:
        def change(state: dict[str, Any]) -> None:
            inst = state["instances"].get(name)
            if inst is not None:
                inst["kv_bytes"] = max(0, int(inst["kv_bytes"]) - nbytes)

        self._update(change)

    def unregister(self, name: str) -> None:
        self._update(lambda state: state["instances"].pop(name, None))

    def snapshot(self) -> DeviceSnapshot | None:
        """The device's figures now, or None if the device file does not exist."""
        if not self.path.exists():
            return None
        with self._locked(exclusive=False):
            try:
                state = self._read()
            except FileNotFoundError:
                return None
        live = {k: v for k, v in state["instances"].items() if _alive(int(v["pid"]))}
        processes: dict[int, int] = {}
        for inst in live.values():
            pid = int(inst["pid"])
            processes[pid] = processes.get(pid, 0) + _instance_bytes(inst)
        state["instances"] = live
        return DeviceSnapshot(
            total_bytes=int(state["total_bytes"]),
            used_bytes=_used(state),
            processes=processes,
            instances={k: _instance_bytes(v) for k, v in live.items()},
            reserved_bytes=int(state.get("reserved_bytes", 0)),
        )
