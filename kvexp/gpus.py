"""GPU facts both processes need: NVML opened and closed in one place, which GPU a process
sees, and where the per-GPU lock files live."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

GPU_LOCK_DIR = "/tmp/kvexp-gpu-locks"  # engine.gpu_lock_dir's default


class GpuSlotError(RuntimeError):
    """No GPU slot can be had: a bad setting, too few GPUs, or none free in time."""


@contextlib.contextmanager
def nvml() -> Iterator[Any]:
    """pynvml, initialised for the block and shut down after it. Raises ImportError without
    pynvml and pynvml.NVMLError (or a driver-library error) without a usable driver."""
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def parse_visible(value: str) -> list[int]:
    """The GPU ids of a CUDA_VISIBLE_DEVICES value; CUDA stops at the first negative one.

    Raises GpuSlotError for UUIDs or MIG names, which slots cannot number."""
    ids: list[int] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            n = int(item)
        except ValueError:
            raise GpuSlotError(
                f"CUDA_VISIBLE_DEVICES={value!r} names GPUs by UUID or MIG id; set "
                "engine.gpu_ids to the GPU indices kvexp may use") from None
        if n < 0:
            break
        ids.append(n)
    return ids


def nvml_index(default: int = 0) -> int:
    """NVML's index of this process's first visible GPU (NVML ignores CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return default
    try:
        ids = parse_visible(visible)
    except GpuSlotError:
        return default
    return ids[0] if ids else default
