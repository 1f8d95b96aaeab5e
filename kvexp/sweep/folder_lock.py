"""One writer per sweep folder: a sweep (and `resume`, which runs one) holds an exclusive
lock on `<sweep dir>/.kvexp.lock` for as long as its process lives. A folder that cannot be
written (read-only, a file in its way) is refused in one line naming it and its key."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = ".kvexp.lock"
_held: list[IO[str]] = []  # kept open until the process exits, which releases the lock


class FolderRefused(Exception):
    """The sweep folder cannot be used; the message says why."""


class FolderInUse(FolderRefused):
    """Another live process holds the sweep folder; the message names its pid."""


class FolderUnwritable(FolderRefused):
    """The folder cannot be made or written; the message names it and its config key."""


def unwritable(folder: Path, key: str, err: OSError | None = None) -> FolderUnwritable:
    """The one-line error for `folder` (set by `key`, e.g. hydra.sweep.dir)."""
    why = f": {err.strerror or err}" if err is not None else ""
    return FolderUnwritable(f"cannot write to {folder} ({key}){why}; give {key} a "
                            "folder you can write")


def check_writable(folder: Path, key: str) -> None:
    """Raise FolderUnwritable if `folder` could not be made and written, before anything
    is made: its nearest existing parent must be a writable folder."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise unwritable(folder, key, NotADirectoryError(20, f"{probe} is not a folder"))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise unwritable(folder, key, PermissionError(13, f"{probe} is read-only"))


def hold(sweep_dir: Path) -> None:
    """Take `sweep_dir`'s lock, or raise FolderInUse naming the holder's pid."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        f = open(sweep_dir / LOCK_NAME, "a+")  # noqa: SIM115 (held for the process's life)
    except OSError as e:
        raise unwritable(sweep_dir, "hydra.sweep.dir", e) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise FolderInUse(
            f"{sweep_dir} is in use by another kvexp sweep or resume (pid {pid}); wait for "
            "it to end, or give this sweep another hydra.sweep.dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held.append(f)
