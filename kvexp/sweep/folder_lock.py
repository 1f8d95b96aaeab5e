"""One writer per sweep folder: a sweep (and `resume`, which runs one) holds an exclusive
lock on `<sweep dir>/.kvexp.lock` for as long as its process lives."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = ".kvexp.lock"
_held: list[IO[str]] = []  # kept open until the process exits, which releases the lock


class FolderInUse(Exception):
    """Another live process holds the sweep folder; the message names its pid."""


def hold(sweep_dir: Path) -> None:
    """Take `sweep_dir`'s lock, or raise FolderInUse naming the holder's pid."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    f = open(sweep_dir / LOCK_NAME, "a+")  # noqa: SIM115 (held for the process's life)
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
