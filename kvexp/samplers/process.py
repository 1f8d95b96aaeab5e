"""Host memory (RSS) of each engine server's process tree, via psutil."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from kvexp.results.records import InstanceHandle, Sample

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def _scan_ppids() -> dict[int, int]:
    """pid -> parent pid for every process, in one pass over the process table."""
    fast: Callable[[], dict[int, int]] | None = getattr(psutil, "_ppid_map", None)
    if fast is not None:
        return fast()
    out: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            out[proc.pid] = ppid
    return out


class ProcessTrees:
    """Each server's process tree (root pid + recursive descendants).

    The process table is scanned once for all instances, at most every `ttl_s` seconds
    (a worker started in between is seen at the next scan); Process objects are kept so
    a pid reused by another process is not mistaken for the old one.
    """

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._scanned_at = -float("inf")
        self._children: dict[int, list[int]] = {}
        self._procs: dict[int, psutil.Process] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._scanned_at < self.ttl_s:
            return
        ppids = _scan_ppids()
        children: dict[int, list[int]] = {}
        for pid, ppid in ppids.items():
            children.setdefault(ppid, []).append(pid)
        self._children = children
        self._procs = {pid: p for pid, p in self._procs.items() if pid in ppids}
        self._scanned_at = now

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        try:
            if proc is None or not proc.is_running():
                proc = psutil.Process(pid)
                self._procs[pid] = proc
        except _GONE:
            self._procs.pop(pid, None)
            return None
        return proc

    def tree(self, pid: int | None) -> list[psutil.Process]:
        """The root and its descendants that are alive; empty if `pid` is None or gone."""
        if pid is None or self._process(pid) is None:
            return []
        self._refresh()
        out: list[psutil.Process] = []
        stack, seen = [pid], {pid}
        while stack:
            p = stack.pop()
            proc = self._process(p)
            if proc is None:
                continue
            out.append(proc)
            for c in self._children.get(p, ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return out

    def pids(self, pid: int | None) -> list[int]:
        return [p.pid for p in self.tree(pid)]


class ProcessSampler:
    """Per instance: `rss_bytes`, the resident host memory summed over the server's tree.

    RSS counts shared pages in every process that maps them, so a tree of forked
    workers reads higher than its unique footprint.
    """

    source = "process"

    def __init__(
        self, instances: list[InstanceHandle], interval_s: float, tree_ttl_s: float = 0.5
    ) -> None:
        self.instances = instances
        self.interval_s = interval_s
        self._trees = ProcessTrees(tree_ttl_s)

    def sample(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for inst in list(self.instances):
            rss, alive = 0, 0
            for proc in self._trees.tree(inst.pid):
                try:
                    rss += proc.memory_info().rss
                    alive += 1
                except _GONE:
                    continue
            if alive:
                out.append(Sample(now, self.source, inst.name, "rss_bytes", float(rss)))
        return out

    def close(self) -> None:
        pass
