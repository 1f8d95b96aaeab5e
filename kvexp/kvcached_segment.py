"""kvcached's per-instance accounting segments, read and written without importing kvcached.

`/dev/shm/<KVCACHED_IPC_NAME>` holds three native int64: limit, used and prealloc
bytes, guarded by flock (shared to read, exclusive to write). This is what
kvcached's `kvtop` and `kvctl` read and write. A hybrid model (several KV-cache
groups) gets one segment per group: group 0 at `<name>`, group k at `<name>_g<k>`.
kvcached turns KVCACHED_IPC_NAME into `<name>` with `kvcached_ipc_name`.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "=qqq"  # native byte order, three int64
SIZE = struct.calcsize(FORMAT)  # 24 bytes
_STRUCT = struct.Struct(FORMAT)
SHM_DIR = Path(os.environ.get("KVEXP_SHM_DIR", "/dev/shm"))
IPC_NAME_MAX = 64  # kvcached keeps the first 64 characters of KVCACHED_IPC_NAME
_GROUP_RE = re.compile(r"_g([1-9][0-9]*)$")


class InvalidSegmentName(ValueError):
    """A segment name that is not a plain file name inside the shm dir."""


class NotASegment(ValueError):
    """A file that exists but is not a 24-byte kvcached segment."""


class KvcachedNotActive(RuntimeError):
    """No kvcached segment with a limit > 0 appeared for an instance in time."""


@dataclass(frozen=True)
class SegmentInfo:
    limit_bytes: int
    used_bytes: int
    prealloc_bytes: int

    @property
    def held_bytes(self) -> int:
        """Physical KV memory mapped by the instance: used + prealloc."""
        return self.used_bytes + self.prealloc_bytes


@dataclass(frozen=True)
class InstanceSegments:
    """One instance's segments by KV-cache group (0 = `<name>`, k = `<name>_g<k>`)."""

    ipc_name: str
    groups: dict[int, SegmentInfo] = field(default_factory=dict)

    @property
    def total(self) -> SegmentInfo:
        """The groups summed: the instance's limit, used and prealloc bytes."""
        g = self.groups.values()
        return SegmentInfo(sum(s.limit_bytes for s in g), sum(s.used_bytes for s in g),
                           sum(s.prealloc_bytes for s in g))


def kvcached_ipc_name(value: str) -> str:
    """The segment name kvcached uses for KVCACHED_IPC_NAME=`value`: every character other
    than a letter, digit, `_` or `-` becomes `-`, then the first 64 are kept
    (kvcached.utils._sanitize_segment)."""
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in value)
    return safe[:IPC_NAME_MAX]


def ipc_name(instance: str, tag: str) -> str:
    """The KVCACHED_IPC_NAME for an instance: `kvcached_<instance>_<tag>`, in kvcached's
    characters and at most 64 long (the instance part is shortened, the tag kept), so that
    kvcached uses it unchanged. The one place kvexp derives IPC names."""
    safe_tag = kvcached_ipc_name(tag)
    if not safe_tag or len(safe_tag) > IPC_NAME_MAX - len("kvcached__") - 1:
        raise ValueError(f"IPC name tag {tag!r} must be 1-{IPC_NAME_MAX - 11} characters")
    room = IPC_NAME_MAX - len("kvcached__") - len(safe_tag)
    name = f"kvcached_{kvcached_ipc_name(instance)[:room]}_{safe_tag}"
    assert kvcached_ipc_name(name) == name
    return name


def check_name(name: str) -> str:
    """`name` if it is a plain file name (no `/`, not `.`/`..`, no NUL); else InvalidSegmentName."""
    if not name or "/" in name or "\0" in name or name in (".", "..") or ".." in name:
        raise InvalidSegmentName(
            f"invalid kvcached segment name {name!r}: a file name in the shm dir is expected "
            "(no '/', no '..')")
    return name


def segment_path(ipc_name: str, shm_dir: Path | None = None) -> Path:
    """The segment's file; the name is checked (`check_name`)."""
    return (shm_dir or SHM_DIR) / check_name(ipc_name)


def validate_segment(name: str, shm_dir: Path | None = None) -> Path:
    """The path of an existing segment named `name`, checked: a plain name, resolving inside
    the shm dir, a regular file of exactly 24 bytes. FileNotFoundError, InvalidSegmentName
    or NotASegment (each naming the value) otherwise."""
    root = shm_dir or SHM_DIR
    path = segment_path(name, root)
    real, real_root = path.resolve(), root.resolve()
    if real.parent != real_root:
        raise InvalidSegmentName(f"kvcached segment {name!r} resolves to {real}, "
                                 f"outside {real_root}")
    if not path.exists():
        raise FileNotFoundError(f"no kvcached segment {path}")
    if path.is_symlink() or not real.is_file():
        raise NotASegment(f"{path} is not a regular file, so not a kvcached segment")
    size = real.stat().st_size
    deadline = time.monotonic() + 0.5
    while size == 0 and time.monotonic() < deadline:  # being created: kvcached sizes it next
        time.sleep(0.01)
        size = real.stat().st_size
    if size != SIZE:
        raise NotASegment(f"{path} is {size} bytes; a kvcached segment is exactly {SIZE}")
    return path


def read_path(path: Path | str) -> SegmentInfo | None:
    """One segment read under a shared flock (released by the close)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        data = os.pread(fd, SIZE + 1, 0)
    except IsADirectoryError:
        return None
    finally:
        os.close(fd)
    if len(data) != SIZE:
        return None
    return SegmentInfo(*_STRUCT.unpack(data))


def read_segment(ipc_name: str, shm_dir: Path | None = None) -> SegmentInfo | None:
    """The segment's figures, or None if it does not exist (yet, or any more)."""
    return read_path(segment_path(ipc_name, shm_dir))


def group_names(ipc_name: str, shm_dir: Path | None = None) -> dict[int, str]:
    """The segment names of an instance's KV-cache groups present in the shm dir, by group."""
    root = shm_dir or SHM_DIR
    out: dict[int, str] = {}
    if (root / check_name(ipc_name)).exists():
        out[0] = ipc_name
    prefix = ipc_name + "_g"
    try:
        with os.scandir(root) as it:
            for entry in it:
                if entry.name.startswith(prefix) and (m := _GROUP_RE.search(entry.name)) \
                        and entry.name == f"{ipc_name}_g{m.group(1)}":
                    out[int(m.group(1))] = entry.name
    except FileNotFoundError:
        return {}
    return dict(sorted(out.items()))


def read_groups(ipc_name: str, shm_dir: Path | None = None,
                names: dict[int, str] | None = None) -> InstanceSegments:
    """Every group segment of an instance (`names` from `group_names`, found if None)."""
    names = group_names(ipc_name, shm_dir) if names is None else names
    root = shm_dir or SHM_DIR
    groups = {g: info for g, n in names.items() if (info := read_path(root / n)) is not None}
    return InstanceSegments(ipc_name, groups)


def is_segment(path: Path) -> bool:
    """Whether `path` looks like a kvcached segment, as kvtop judges: a 24-byte file whose
    limit is > 0."""
    try:
        if not path.is_file() or path.stat().st_size != SIZE:
            return False
    except OSError:
        return False
    try:
        info = read_path(path)
    except OSError:
        return False
    return info is not None and info.limit_bytes > 0


def discover_segments(shm_dir: Path | None = None) -> list[str]:
    """Names of every kvcached-looking segment in the shm dir (`is_segment`), any name."""
    root = shm_dir or SHM_DIR
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    return [p.name for p in entries if is_segment(p)]


def wait_for_segments(ipc_name: str, timeout_s: float, poll_s: float = 0.1,
                      shm_dir: Path | None = None) -> InstanceSegments:
    """The instance's segments once one with limit > 0 exists; KvcachedNotActive after
    `timeout_s` without one (the message names the likely causes)."""
    if timeout_s < 0 or poll_s <= 0:
        raise ValueError(f"timeout_s must be >= 0 and poll_s > 0, got {timeout_s}, {poll_s}")
    deadline = time.monotonic() + timeout_s
    while True:
        got = read_groups(ipc_name, shm_dir)
        if any(s.limit_bytes > 0 for s in got.groups.values()):
            return got
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    where = segment_path(ipc_name, shm_dir)
    raise KvcachedNotActive(
        f"kvcached is not active: no segment {where} with a limit > 0 after {timeout_s:g} s. "
        "Likely causes: kvcached is not importable by the server's Python (its "
        "kvcached_autopatch.pth missing from that interpreter's site-packages); a vLLM "
        "version kvcached does not patch (it then builds its static pool); "
        f"ENABLE_KVCACHED=true or KVCACHED_IPC_NAME={ipc_name} not in the server's environment")


def write_segment(
    ipc_name: str,
    limit_bytes: int | None = None,
    used_bytes: int | None = None,
    prealloc_bytes: int | None = None,
    shm_dir: Path | None = None,
) -> SegmentInfo:
    """Update the given fields (others kept), creating the segment if needed."""
    path = segment_path(ipc_name, shm_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
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
    """What `kvctl limit` does: set an instance's KV limit (applies at its next allocation).
    Only an existing 24-byte segment inside the shm dir is written (`validate_segment`)."""
    if limit_bytes < 0:
        raise ValueError(f"a KV limit must be >= 0 bytes, got {limit_bytes}")
    validate_segment(ipc_name, shm_dir)
    return write_segment(ipc_name, limit_bytes=limit_bytes, shm_dir=shm_dir)


def remove_segment(ipc_name: str, shm_dir: Path | None = None) -> None:
    segment_path(ipc_name, shm_dir).unlink(missing_ok=True)
