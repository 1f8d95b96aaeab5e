"""A running point's journals: request rows and memory samples appended as JSON lines.

While a point runs, every finished request row goes to `requests.jsonl` and every sampler
tick to `memory.jsonl`; a background thread flushes both every `FLUSH_S`, so a point whose
process is killed (SIGKILL, the OOM killer) loses at most the last second of measurements.
At its end the point folds them into the Parquet files (store.py) and removes them; the
sweep folds the journals of a point whose process died (`fold.salvage`), and
`load` reads them where nobody could. A half-written last line (the kill came mid-write)
is skipped.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO

from kvexp.results.records import RequestRow, Sample

REQUESTS = "requests.jsonl"
MEMORY = "memory.jsonl"
FLUSH_S = 0.5  # at most this long between a measurement and its line on disk

log = logging.getLogger(__name__)


class Journal:
    """Appends a point's rows and samples to its folder's journals, flushed every `flush_s`."""

    def __init__(self, point_dir: Path, flush_s: float = FLUSH_S) -> None:
        self.point_dir = Path(point_dir)
        self._files: dict[str, IO[str]] = {
            name: open(self.point_dir / name, "a", encoding="utf-8")  # noqa: SIM115
            for name in (REQUESTS, MEMORY)}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._flusher, args=(flush_s,), daemon=True,
                                        name="kvexp-journal")
        self._thread.start()

    def row(self, row: RequestRow) -> None:
        """Journal one finished request."""
        self._write(REQUESTS, [json.dumps(asdict(row))])

    def samples(self, samples: list[Sample]) -> None:
        """Journal one sampler tick's samples."""
        self._write(MEMORY, [json.dumps(asdict(s)) for s in samples])

    def _write(self, name: str, lines: list[str]) -> None:
        with self._lock:
            f = self._files.get(name)
            if f is None or self._failed:
                return
            try:
                f.write("".join(line + "\n" for line in lines))
            except OSError as e:  # disk full: the point keeps its rows in memory
                self._give_up(e)

    def flush(self) -> None:
        """Everything journaled so far, handed to the OS (it survives the process)."""
        with self._lock:
            if self._failed:
                return
            try:
                for f in self._files.values():
                    f.flush()
            except OSError as e:
                self._give_up(e)

    def _give_up(self, e: OSError) -> None:
        self._failed = True
        log.warning("journal in %s not written (%s); rows are written at the point's end",
                    self.point_dir, e)

    def _flusher(self, flush_s: float) -> None:
        while not self._stop.wait(flush_s):
            self.flush()

    def close(self) -> None:
        """Flush and close the journals (they stay on disk until `remove`)."""
        self._stop.set()
        self._thread.join()
        self.flush()
        with self._lock:
            for f in self._files.values():
                try:
                    f.close()
                except OSError as e:
                    self._give_up(e)
            self._files = {}

    def remove(self) -> None:
        """Delete the journals: their content is in the Parquet files now."""
        remove(self.point_dir)


def remove(point_dir: Path) -> None:
    """Delete `point_dir`'s journals (once folded into its Parquet files)."""
    for name in (REQUESTS, MEMORY):
        (Path(point_dir) / name).unlink(missing_ok=True)


def exists(point_dir: Path) -> bool:
    """Whether the point left journals (it ran, and did not fold them)."""
    return any((Path(point_dir) / name).exists() for name in (REQUESTS, MEMORY))


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                out.append(json.loads(line))
            except ValueError:  # the kill came mid-line (only the last line can be cut)
                log.debug("%s line %d is not whole; skipped", path, n)
    return out


def read_rows(point_dir: Path) -> list[RequestRow]:
    """The request rows journaled in `point_dir`, in the order they finished."""
    return [RequestRow(**d) for d in _lines(Path(point_dir) / REQUESTS)]


def read_samples(point_dir: Path) -> list[Sample]:
    """The samples journaled in `point_dir`."""
    return [Sample(**d) for d in _lines(Path(point_dir) / MEMORY)]
