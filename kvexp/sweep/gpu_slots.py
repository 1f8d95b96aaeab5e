"""GPUs for sweep points that run in parallel on one host (e.g. Hydra's joblib launcher).

The host's GPUs (`engine.gpu_ids`, else those `CUDA_VISIBLE_DEVICES` lists, else every
GPU NVML counts) are cut into slots of `engine.gpus_per_point`. A point holds one slot
while it runs: an exclusive `flock` on one lock file per GPU of the slot, in
`engine.gpu_lock_dir`. The kernel drops the locks when the holder dies, however it dies,
so a killed sweep never leaves a GPU claimed. Another point, or another sweep on the same
host, waits for a free slot. The point's process gets the slot as `CUDA_VISIBLE_DEVICES`.

Inside a SLURM job (`SLURM_JOB_ID` set) the lock files live in a folder of that job:
SLURM already keeps jobs' GPUs apart, and jobs may number their GPUs alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvexp.gpus import GPU_LOCK_DIR, GpuSlotError, nvml, nvml_index, parse_visible

__all__ = ["GpuSlotError", "nvml_index", "parse_visible"]  # shared with the point side


def check_gpu_settings(gpus_per_point: int, gpu_ids: list[int] | None,
                       where: str = "engine") -> list[str]:
    """Range problems of the GPU settings, as messages naming the keys (empty: fine)."""
    errs = []
    if gpus_per_point < 1:
        errs.append(f"{where}.gpus_per_point must be >= 1, got {gpus_per_point}")
    if gpu_ids is None:
        return errs
    ids = list(gpu_ids)
    if not ids:
        errs.append(f"{where}.gpu_ids must list at least one GPU, or be null (every visible "
                    "GPU)")
        return errs
    negative = [i for i in ids if i < 0]
    if negative:
        errs.append(f"{where}.gpu_ids must be >= 0, got {negative}")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        errs.append(f"{where}.gpu_ids lists GPU(s) {dup} more than once")
    if 1 <= gpus_per_point and len(set(ids)) < gpus_per_point:
        errs.append(f"{where}.gpu_ids lists {len(set(ids))} GPU(s), fewer than "
                    f"{where}.gpus_per_point ({gpus_per_point})")
    return errs


def nvml_count() -> int:
    """How many GPUs NVML sees; 0 without pynvml, a driver or a GPU."""
    try:
        with nvml() as pynvml:
            return int(pynvml.nvmlDeviceGetCount())
    except Exception:  # noqa: BLE001 - NVMLError and friends: no usable driver
        return 0


def host_gpus(gpu_ids: list[int] | None = None) -> list[int]:
    """The GPUs points may use: `gpu_ids`, else CUDA_VISIBLE_DEVICES, else NVML's count."""
    if gpu_ids is not None:
        return list(gpu_ids)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return parse_visible(visible)
    return list(range(nvml_count()))


def make_slots(gpus: list[int], gpus_per_point: int) -> list[list[int]]:
    """Consecutive groups of `gpus_per_point`; GPUs left over are not used."""
    n = len(gpus) // gpus_per_point
    return [gpus[i * gpus_per_point:(i + 1) * gpus_per_point] for i in range(n)]


def lock_scope(lock_dir: str | Path) -> Path:
    """The folder of the lock files: `lock_dir`, or a folder of this SLURM job in it."""
    base = Path(lock_dir).expanduser()
    job = os.environ.get("SLURM_JOB_ID")
    return base / f"slurm-{job}" if job else base


def _make_dir(path: Path) -> None:
    """The lock folder; the folders made here are writable by every user (like /tmp)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        with contextlib.suppress(OSError):
            os.chmod(p, 0o1777)


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file: flock needs no write access
        return os.open(path, os.O_RDONLY)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)
    return fd


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "?"
    return text or "?"


def _try_slot(scope: Path, slot: list[int], owner: str) -> list[int] | None:
    """The slot's locked file descriptors, or None (nothing held) if a GPU of it is taken."""
    fds: list[int] = []
    for gpu in slot:
        fd = _open_lock(scope / f"gpu-{gpu}.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for held in fds:
                os.close(held)  # closing drops the lock
            return None
        fds.append(fd)
    note = f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}"
    note += f" ({owner})\n" if owner else "\n"
    for fd in fds:  # who holds it, for the error message of whoever waits
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
    return fds


@contextlib.contextmanager
def claim_gpus(gpus_per_point: int = 1, gpu_ids: list[int] | None = None,
               lock_dir: str | Path = GPU_LOCK_DIR, timeout_s: float = 3600.0,
               owner: str = "", poll_s: float = 0.25) -> Iterator[list[int] | None]:
    """Hold one slot of `gpus_per_point` GPUs for the block; yields its GPU ids.

    Yields None where the host has no GPU (nothing to assign: the sim, the CPU). Waits for
    a free slot, polling, up to `timeout_s`; then raises GpuSlotError naming the holders.
    `owner` (e.g. the point's folder) is written into the lock files for that message."""
    errs = check_gpu_settings(gpus_per_point, gpu_ids)
    if errs:
        raise GpuSlotError("; ".join(errs))
    gpus = host_gpus(gpu_ids)
    if not gpus:
        yield None
        return
    slots = make_slots(gpus, gpus_per_point)
    if not slots:
        raise GpuSlotError(f"engine.gpus_per_point={gpus_per_point}, but only {len(gpus)} "
                           f"GPU(s) can be used here: {gpus}")
    scope = lock_scope(lock_dir)
    _make_dir(scope)
    deadline = time.monotonic() + timeout_s
    while True:
        for slot in slots:
            fds = _try_slot(scope, slot, owner)
            if fds is not None:
                try:
                    yield slot
                finally:
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, 0)
                        os.close(fd)
                return
        if time.monotonic() >= deadline:
            held = "; ".join(f"GPU {g}: {_holder(scope / f'gpu-{g}.lock')}" for g in gpus)
            raise GpuSlotError(
                f"no free slot of {gpus_per_point} GPU(s) among {gpus} after {timeout_s:g} s "
                f"(locks in {scope}; {held}). Run fewer points at once "
                "(hydra.launcher.n_jobs), or wait for the other run")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def uses_gpus(engine: Any) -> bool:
    """Whether a point with this engine config runs on GPUs (its engine says)."""
    from kvexp import engines

    return engines.get(engine.kind).uses_gpus(engine)


def point_gpus(engine: Any, owner: str = "") -> contextlib.AbstractContextManager[
        list[int] | None]:
    """`claim_gpus` with a point's `engine` settings; None at once if it needs no GPU."""
    if not uses_gpus(engine):
        return contextlib.nullcontext(None)
    return claim_gpus(engine.gpus_per_point, engine.gpu_ids, engine.gpu_lock_dir,
                      engine.gpu_wait_timeout_s, owner)


def gpu_env(gpus: list[int] | None, base: dict[str, str] | None = None
            ) -> dict[str, str] | None:
    """The point process's environment for a slot: CUDA_VISIBLE_DEVICES, numbered in PCI
    order as NVML and nvidia-smi number GPUs (unless CUDA_DEVICE_ORDER is set); None
    (inherit everything) for no slot."""
    if gpus is None:
        return None
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env
