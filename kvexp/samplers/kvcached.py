"""kvcached's per-instance segments: the KV limit and the physical KV memory held.

Sampled at 100 Hz by default (`sampler.kvcached_interval_s`: 0.01): a segment read is one
24-byte file read, so the elasticity figures resolve 10 ms (benchmarks/sampler_cost.py
prints what it costs).
"""

from __future__ import annotations

import time
from pathlib import Path

from kvexp.kvcached_segment import SHM_DIR, SegmentInfo, group_names, read_path
from kvexp.results.records import InstanceHandle, Sample

FIELDS = ("limit", "used", "prealloc", "held")


def group_metric(field: str, group: int) -> str:
    """The per-group metric name: `kv_used_bytes_g1` (group 1's used bytes)."""
    return f"kv_{field}_bytes_g{group}"


class KvcachedSampler:
    """Per instance with an `ipc_name`: `kv_limit_bytes`, `kv_used_bytes`,
    `kv_prealloc_bytes` and `kv_held_bytes` (used + prealloc), summed over the instance's
    KV-cache group segments (`<ipc>`, `<ipc>_g<k>`). An instance with more than one group
    also gets each group's figures as `kv_<field>_bytes_g<k>`. No segment, no samples.

    The group segments are looked up in the shm dir at most every `groups_ttl_s`; the
    segments themselves are read on every tick.
    """

    source = "kvcached"

    def __init__(
        self,
        instances: list[InstanceHandle],
        interval_s: float,
        shm_dir: Path | None = None,
        groups_ttl_s: float = 1.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"kvcached sampler interval must be > 0 s, got {interval_s}")
        self.instances = instances
        self.interval_s = interval_s
        self.shm_dir = None if shm_dir is None else Path(shm_dir)
        self.groups_ttl_s = groups_ttl_s
        self._paths: dict[str, tuple[float, dict[int, str]]] = {}

    def _group_paths(self, ipc: str) -> dict[int, str]:
        now = time.monotonic()
        cached = self._paths.get(ipc)
        if cached is not None and now - cached[0] < self.groups_ttl_s and cached[1]:
            return cached[1]
        root = self.shm_dir or SHM_DIR
        paths = {g: str(root / n) for g, n in group_names(ipc, self.shm_dir).items()}
        self._paths[ipc] = (now, paths)
        return paths

    def sample(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for inst in list(self.instances):
            if not inst.ipc_name:
                continue
            groups: dict[int, SegmentInfo] = {}
            for g, path in self._group_paths(inst.ipc_name).items():
                if (info := read_path(path)) is not None:
                    groups[g] = info
            if not groups:
                self._paths.pop(inst.ipc_name, None)  # look again next tick
                continue
            name, src = inst.name, self.source
            lim = sum(i.limit_bytes for i in groups.values())
            used = sum(i.used_bytes for i in groups.values())
            pre = sum(i.prealloc_bytes for i in groups.values())
            out += [Sample(now, src, name, "kv_limit_bytes", float(lim)),
                    Sample(now, src, name, "kv_used_bytes", float(used)),
                    Sample(now, src, name, "kv_prealloc_bytes", float(pre)),
                    Sample(now, src, name, "kv_held_bytes", float(used + pre))]
            if len(groups) > 1:
                for g, i in groups.items():
                    for fld, v in zip(FIELDS, (i.limit_bytes, i.used_bytes, i.prealloc_bytes,
                                               i.held_bytes), strict=True):
                        out.append(Sample(now, src, name, group_metric(fld, g), float(v)))
        return out

    def close(self) -> None:
        self._paths.clear()
