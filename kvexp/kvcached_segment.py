"""kvcached's per-instance accounting segment, read and written without importing kvcached.

`/dev/shm/<KVCACHED_IPC_NAME>` holds three native int64: limit, used and prealloc
bytes, guarded by flock (shared to read, exclusive to write). This is what
kvcached's `kvtop` and `kvctl` read and write.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

FORMAT = "=qqq"  # native byte order, three int64
SIZE = struct.calcsize(FORMAT)  # 24 bytes
SHM_DIR = Path(os.environ.get("KVEXP_SHM_DIR", "/dev/shm"))


@dataclass(frozen=True)
class SegmentInfo:
    limit_bytes: int
    used_bytes: int
    prealloc_bytes: int

    @property
    def held_bytes(self) -> int:
        """Physical KV memory mapped by the instance: used + prealloc."""
        return self.used_bytes + self.prealloc_bytes


def segment_path(ipc_name: str, shm_dir: Path | None = None) -> Path:
    return (shm_dir or SHM_DIR) / ipc_name.lstrip("/")


def read_segment(ipc_name: str, shm_dir: Path | None = None) -> SegmentInfo | None:
    """The segment's figures, or None if it does not exist (yet, or any more)."""
    try:
        with open(segment_path(ipc_name, shm_dir), "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                data = f.read(SIZE)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    except FileNotFoundError:
        return None
    if len(data) < SIZE:
        return None
    return SegmentInfo(*struct.unpack(FORMAT, data))


def write_segment(
    ipc_name: str,
    limit_bytes: int | None = None,
    used_bytes: int | None = None,
    prealloc_bytes: int | None = None,
    shm_dir: Path | None = None,
) -> SegmentInfo:
    """Update the given fields (others kept), creating the segment if needed."""
    path = segment_path(ipc_name, shm_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(fd, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            data = f.read(SIZE)
            old = struct.unpack(FORMAT, data) if len(data) == SIZE else (0, 0, 0)
            new = SegmentInfo(
                old[0] if limit_bytes is None else int(limit_bytes),
                old[1] if used_bytes is None else int(used_bytes),
                old[2] if prealloc_bytes is None else int(prealloc_bytes),
            )
            f.seek(0)
            f.write(struct.pack(FORMAT, new.limit_bytes, new.used_bytes, new.prealloc_bytes))
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return new


def set_limit(ipc_name: str, limit_bytes: int, shm_dir: Path | None = None) -> SegmentInfo:
    """What `kvctl limit` does: set an instance's KV limit (applies at its next allocation)."""
    if read_segment(ipc_name, shm_dir) is None:
        raise FileNotFoundError(f"no kvcached segment {segment_path(ipc_name, shm_dir)}")
    return write_segment(ipc_name, limit_bytes=limit_bytes, shm_dir=shm_dir)


def remove_segment(ipc_name: str, shm_dir: Path | None = None) -> None:
    segment_path(ipc_name, shm_dir).unlink(missing_ok=True)
