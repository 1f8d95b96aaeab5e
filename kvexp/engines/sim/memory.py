"""KV pools on a SimDevice, counted in blocks of `block_size` tokens.

`StaticPool` is vLLM's: the whole budget is reserved at start and held until exit.
`ElasticPool` is kvcached's: the same virtual capacity, with physical pages of
`page_size_mb MiB x num_layers` mapped on demand and a reserve of pre-mapped pages.

Simplification: blocks are packed densely, so an elastic pool's pages in use are
`ceil(used blocks / blocks per page)` (the null block included); real kvcached
can hold a page for a single live block, so this is a lower bound on its use.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

from kvexp.config import AllocatorConfig, ModelConfig
from kvexp.engines.sim.device import InsufficientMemory, SimDevice
from kvexp.engines.sim.footprint import kv_budget_bytes
from kvexp.engines.sim.gpus import MiB
from kvexp.kvcached_segment import read_segment, remove_segment, write_segment


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


class KvPool(ABC):
    """Blocks of KV cache; block 0 is vLLM's null block, never handed out."""

    def __init__(self, device: SimDevice, name: str, model: ModelConfig, block_size: int) -> None:
        self.device = device
        self.name = name
        self.model = model
        self.block_size = block_size
        self.block_bytes = block_size * model.kv_bytes_per_token
        self.used_blocks = 0  # handed out to sequences (the null block not counted)
        self.capacity_blocks = 0  # vLLM's num_gpu_blocks

    def _check_capacity(self, budget: int) -> None:
        if budget <= 0 or self.capacity_blocks < 2:
            raise InsufficientMemory(
                f"insufficient device memory: no room for KV blocks for instance {self.name!r} "
                f"(budget {_mib(budget)} after weights, activations and context)"
            )
        need = math.ceil(self.model.max_model_len / self.block_size) + 1
        if need > self.capacity_blocks:
            raise InsufficientMemory(
                f"insufficient device memory: max_model_len {self.model.max_model_len} needs "
                f"{need} KV blocks but instance {self.name!r} has {self.capacity_blocks}"
            )

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - 1 - self.used_blocks

    @property
    def usage(self) -> float:
        """Fraction of usable blocks in use (vLLM's kv_cache_usage_perc)."""
        return self.used_blocks / max(1, self.capacity_blocks - 1)

    @property
    @abstractmethod
    def held_bytes(self) -> int:
        """Physical KV memory this pool holds on the device."""

    @property
    @abstractmethod
    def used_bytes(self) -> int:
        """Physical KV memory backing blocks in use."""

    @abstractmethod
    def can_allocate(self, n_blocks: int) -> bool: ...

    @abstractmethod
    def allocate(self, n_blocks: int) -> bool:
        """Take `n_blocks`; False (and nothing taken) if they cannot be had now."""

    @abstractmethod
    def free(self, n_blocks: int) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Give every byte back to the device."""


class StaticPool(KvPool):
    """vLLM's pool: `capacity_blocks` reserved at start, held until `close()`."""

    def __init__(
        self,
        device: SimDevice,
        name: str,
        model: ModelConfig,
        allocator: AllocatorConfig,
        block_size: int,
        activation: int,
    ) -> None:
        super().__init__(device, name, model, block_size)
        gpu = device.gpu
        budget = kv_budget_bytes(gpu, model, allocator.gpu_memory_utilization, activation)
        self.capacity_blocks = max(0, budget // self.block_bytes)
        self._check_capacity(budget)
        self._held = self.capacity_blocks * self.block_bytes
        if not device.try_reserve_kv(name, self._held, gpu.total_bytes - gpu.reserved_bytes):
            snap = device.snapshot()
            used = snap.used_bytes if snap else 0
            self._held = 0
            raise InsufficientMemory(
                f"insufficient device memory: instance {name!r} needs {_mib(budget)} for its "
                f"static KV pool (gpu_memory_utilization {allocator.gpu_memory_utilization} x "
                f"{_mib(gpu.total_bytes - gpu.reserved_bytes)} - weights {_mib(model.weight_bytes)}"
                f" - activations {_mib(activation)}), but only "
                f"{_mib(gpu.total_bytes - gpu.reserved_bytes - used)} is free "
                f"({_mib(used)} used on the device)"
            )

    @property
    def held_bytes(self) -> int:
        return self._held

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.block_bytes

    def can_allocate(self, n_blocks: int) -> bool:
        return n_blocks <= self.free_blocks

    def allocate(self, n_blocks: int) -> bool:
        if not self.can_allocate(n_blocks):
            return False
        self.used_blocks += n_blocks
        return True

    def free(self, n_blocks: int) -> None:
        self.used_blocks = max(0, self.used_blocks - n_blocks)

    def close(self) -> None:
        if self._held:
            self.device.release_kv(self.name, self._held)
            self._held = 0


class ElasticPool(KvPool):
    """kvcached's pool: pages mapped on first use, unmapped when free beyond a reserve.

    Mapping is FCFS on the device, capped at `gpu_utilization x total` for all
    instances together, and at the limit in the kvcached segment `ipc_name`
    (re-read at each allocation, so `set_limit` applies at the next one: pages in
    use may not exceed it, and reserve pages over it are unmapped).
    """

    def __init__(
        self,
        device: SimDevice,
        name: str,
        model: ModelConfig,
        allocator: AllocatorConfig,
        block_size: int,
        activation: int,
        ipc_name: str,
        shm_dir: Path | None = None,
    ) -> None:
        super().__init__(device, name, model, block_size)
        gpu = device.gpu
        self.allocator = allocator
        self.ipc_name = ipc_name
        self.shm_dir = shm_dir
        self.page_bytes = allocator.page_size_mb * MiB * model.num_layers
        self.blocks_per_page = self.page_bytes // self.block_bytes
        if self.blocks_per_page < 1:
            raise ValueError(
                f"a KV block ({self.block_bytes} B) is larger than a page ({self.page_bytes} B)"
            )
        budget = kv_budget_bytes(gpu, model, allocator.gpu_memory_utilization, activation)
        self.capacity_pages = max(0, budget // self.page_bytes)
        self.capacity_blocks = self.capacity_pages * self.blocks_per_page
        self._check_capacity(budget)
        self.cap_bytes = int(allocator.gpu_utilization * (gpu.total_bytes - gpu.reserved_bytes))
        self.mapped_pages = 0
        seg = read_segment(ipc_name, shm_dir)
        limit = None if seg is not None and seg.limit_bytes > 0 else self.capacity_bytes
        write_segment(ipc_name, limit, 0, 0, shm_dir)
        if not self._map(1):
            remove_segment(ipc_name, shm_dir)
            raise InsufficientMemory(
                f"insufficient device memory: instance {name!r} cannot map its first KV page "
                f"({_mib(self.page_bytes)}) under the cap {_mib(self.cap_bytes)}"
            )
        if allocator.page_prealloc_enabled:
            self._refill()
        self._sync()

    @property
    def capacity_bytes(self) -> int:
        """Virtual KV capacity (the segment's default limit)."""
        return self.capacity_pages * self.page_bytes

    @property
    def in_use_pages(self) -> int:
        return self._pages_for(self.used_blocks)

    @property
    def prealloc_pages(self) -> int:
        return self.mapped_pages - self.in_use_pages

    @property
    def held_bytes(self) -> int:
        return self.mapped_pages * self.page_bytes

    @property
    def used_bytes(self) -> int:
        return self.in_use_pages * self.page_bytes

    @property
    def prealloc_bytes(self) -> int:
        return self.prealloc_pages * self.page_bytes

    def limit_bytes(self) -> int:
        """The segment's limit now (the virtual capacity if the segment is gone)."""
        seg = read_segment(self.ipc_name, self.shm_dir)
        return seg.limit_bytes if seg is not None else self.capacity_bytes

    def _pages_for(self, used_blocks: int) -> int:
        return math.ceil((used_blocks + 1) / self.blocks_per_page)

    def _map(self, n: int) -> bool:
        total = self.mapped_pages + n
        if total > self.capacity_pages or total * self.page_bytes > self.limit_bytes():
            return False
        if not self.device.try_reserve_kv(self.name, n * self.page_bytes, self.cap_bytes):
            return False
        self.mapped_pages = total
        return True

    def _unmap(self, n: int) -> None:
        if n > 0:
            self.device.release_kv(self.name, n * self.page_bytes)
            self.mapped_pages -= n

    def _refill(self) -> None:
        while self.prealloc_pages < self.allocator.min_reserved_pages and self._map(1):
            pass

    def _trim(self) -> None:
        over_limit = self.mapped_pages - self.limit_bytes() // self.page_bytes
        excess = max(self.prealloc_pages - self.allocator.max_reserved_pages, over_limit)
        self._unmap(min(self.prealloc_pages, max(0, excess)))

    def _sync(self) -> None:
        gone = read_segment(self.ipc_name, self.shm_dir) is None  # removed by someone else
        write_segment(
            self.ipc_name,
            limit_bytes=self.capacity_bytes if gone else None,
            used_bytes=self.used_bytes,
            prealloc_bytes=self.prealloc_bytes,
            shm_dir=self.shm_dir,
        )

    def can_allocate(self, n_blocks: int) -> bool:
        if n_blocks > self.free_blocks:
            return False
        pages = self._pages_for(self.used_blocks + n_blocks)
        if pages * self.page_bytes > self.limit_bytes():
            return False
        extra = pages - self.mapped_pages
        if extra <= 0:
            return True
        snap = self.device.snapshot()
        return snap is not None and snap.used_bytes + extra * self.page_bytes <= self.cap_bytes

    def allocate(self, n_blocks: int) -> bool:
        if n_blocks > self.free_blocks:
            return False
        pages = self._pages_for(self.used_blocks + n_blocks)
        if pages * self.page_bytes > self.limit_bytes():
            return False
        extra = pages - self.mapped_pages
        if extra > 0 and not self._map(extra):
            return False
        self.used_blocks += n_blocks
        self._trim()  # a limit lowered under the reserve takes it back now
        if self.allocator.page_prealloc_enabled:
            self._refill()
        self._sync()
        return True

    def free(self, n_blocks: int) -> None:
        self.used_blocks = max(0, self.used_blocks - n_blocks)
        self._trim()
        self._sync()

    def close(self) -> None:
        self._unmap(self.mapped_pages)
        self.used_blocks = 0
        remove_segment(self.ipc_name, self.shm_dir)
