"""kvcached's per-instance segment: the KV limit and the physical KV memory held."""

from __future__ import annotations

from pathlib import Path

from kvexp.kvcached_segment import read_segment
from kvexp.results.records import InstanceHandle, Sample


class KvcachedSampler:
    """Per instance with an `ipc_name`: `kv_limit_bytes`, `kv_used_bytes`,
    `kv_prealloc_bytes` and `kv_held_bytes` (used + prealloc). No segment, no samples."""

    source = "kvcached"

    def __init__(
        self, instances: list[InstanceHandle], interval_s: float, shm_dir: Path | None = None
    ) -> None:
        self.instances = instances
        self.interval_s = interval_s
        self.shm_dir = None if shm_dir is None else Path(shm_dir)

    def sample(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for inst in list(self.instances):
            if not inst.ipc_name:
                continue
            info = read_segment(inst.ipc_name, self.shm_dir)
            if info is None:
                continue
            for metric, value in (
                ("kv_limit_bytes", info.limit_bytes),
                ("kv_used_bytes", info.used_bytes),
                ("kv_prealloc_bytes", info.prealloc_bytes),
                ("kv_held_bytes", info.held_bytes),
            ):
                out.append(Sample(now, self.source, inst.name, metric, float(value)))
        return out

    def close(self) -> None:
        pass
