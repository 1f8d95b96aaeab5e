"""Servers shared by consecutive sweep points whose servers would be started the same way.

`-m allocator=kvcached,static burst_size=2,6,12` starts 2 servers, not 6: the points of
one allocator differ only in their workload, which a running server does not care about.
The config decides (`server_key`), not the user; a fresh server is started whenever
results could differ:

- anything that shapes the server differs (engine, model(s), allocator, instances, ports,
  seed): that is a new key;
- each repeat gets its own servers (repeats are independent runs, start-up included);
- vLLM's prefix caching is on (a cache warmed by the previous point would change TTFT);
- the previous point failed, or its servers did not return to idle in time;
- `reuse_servers=false`, a single run, or a launcher other than Hydra's basic one (the
  servers would outlive the worker process that started them).

Shared servers run in the sweep process; points attach to them (`attach.json` in the
point folder) instead of starting their own. Between points the pool waits until every server
is idle again (`is_idle`): no request running or waiting, KV memory at its idle level. A
kvcached server then gives back the pre-mapped pages it kept beyond its ready level
(`restore_ready_level`), so that every point starts from the same held memory; each point
records the held bytes it starts from (`start_kv_held_bytes`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from kvexp import engines
from kvexp.config import Config, digest, point_side_keys, resolve_instances
from kvexp.engines import launch
from kvexp.engines.servers import Server
from kvexp.kvcached_segment import (
    InstanceSegments,
    group_names,
    read_groups,
    read_segment,
    set_limit,
)
from kvexp.results import point_record
from kvexp.results.point_record import mark_failed
from kvexp.sweep.gpu_slots import gpu_env, point_gpus
from kvexp.sweep.state import servers_home

IDLE_TIMEOUT_S = 60.0
MIN_PAGE_BYTES = 2 * 2**20  # kvcached's smallest page (KVCACHED_PAGE_SIZE_MB = 2)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health/metrics poll


def server_key(cfg: Config) -> str | None:
    """Points with the same key can share servers; None: this point never shares."""
    if not cfg.reuse_servers:
        return None
    if not engines.shareable(cfg):
        return None
    d = asdict(cfg)
    for k in point_side_keys():
        d.pop(k, None)
    for inst in d.get("instances", {}).values():
        inst.pop("workload", None)
        inst.pop("slo", None)  # read by the point only, like the global slo
    return digest(d)


def is_idle(server: Server, kv_baseline: int | None, client: httpx.Client) -> bool:
    """Back where it was when it became ready: no request running or waiting, and its KV
    memory at the idle level. That level is, with kvcached, the segment's used bytes at
    ready (vLLM's own KV usage figure stays above 0 there: seen on the H200, docs/h200.md);
    with the static pool, an empty cache (vLLM frees a finished request's blocks)."""
    from kvexp.samplers.metrics import engine_figures

    if server.spec.metrics_path is not None:
        try:
            page = client.get(server.base_url + server.spec.metrics_path, timeout=5).text
        except httpx.HTTPError:
            return False
        figures = engine_figures(page)
        busy = figures.get("num_requests_running", 0) + figures.get("num_requests_waiting", 0)
        if busy > 0:
            return False
        if kv_baseline is None and figures.get("kv_cache_usage", 0) > 0:
            return False
    if kv_baseline is not None and server.spec.ipc_name:
        seg = read_segment(server.spec.ipc_name)
        return seg is not None and seg.used_bytes <= kv_baseline
    return True


def page_bytes(*states: InstanceSegments) -> int:
    """One kvcached page step: the largest step every used/prealloc figure is a multiple of
    (at least 2 MiB)."""
    values = [v for st in states for seg in st.groups.values()
              for v in (seg.used_bytes, seg.prealloc_bytes) if v > 0]
    return max(MIN_PAGE_BYTES, math.gcd(*values)) if values else MIN_PAGE_BYTES


def _excess(now: InstanceSegments, ready: InstanceSegments, page: int) -> int:
    """Held bytes above the ready level, beyond one page of tolerance (0: back)."""
    over = now.total.held_bytes - ready.total.held_bytes
    return over if over > page else 0


def _nudge(server: Server, client: httpx.Client) -> None:
    """One one-token completion: kvcached applies a changed limit at its next allocation."""
    body = {"model": server.spec.served_model, "prompt": "hi", "max_tokens": 1}
    client.post(server.base_url + "/v1/completions", json=body, timeout=30).raise_for_status()


def restore_ready_level(server: Server, ready: InstanceSegments, kv_baseline: int | None,
                        client: httpx.Client) -> str:
    """Bring an idle kvcached server's held KV memory back to its level at ready ("" when
    it is, within one page; else why not). kvcached keeps up to max_reserved_pages freed
    pages mapped; a segment limit under what it holds makes it unmap them at its next
    allocation (`kvctl limit` does the same), so: limit each group to its ready level,
    send one one-token request, wait for idle, and put the limits back."""
    name = server.spec.ipc_name
    if not name or not ready.groups:
        return ""
    names = group_names(name)
    now = read_groups(name, names=names)
    page = page_bytes(ready, now)
    if not _excess(now, ready, page):
        return ""
    limits = {g: seg.limit_bytes for g, seg in now.groups.items()}
    try:
        for g, seg in ready.groups.items():
            if g in names and g in now.groups:
                set_limit(names[g], max(seg.held_bytes, now.groups[g].used_bytes))
        _nudge(server, client)
        t0 = time.monotonic()
        while not is_idle(server, kv_baseline, client):
            if time.monotonic() - t0 > IDLE_TIMEOUT_S:
                return f"not idle {IDLE_TIMEOUT_S:g} s after the limit shrink"
            time.sleep(0.05)
    except httpx.HTTPError as e:
        return f"the request that applies the limit failed: {e}"
    finally:
        for g, limit in limits.items():
            with contextlib.suppress(OSError):
                set_limit(names[g], limit)
    now = read_groups(name, names=names)
    over = _excess(now, ready, page_bytes(ready, now))
    return (f"kvcached held {now.total.held_bytes} B, {over} B over its ready level"
            if over else "")


class ServerPool:
    """The servers of the current key, kept from one point to the next."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.servers: list[Server] = []
        self.info: dict[str, Any] = {}
        self.stop_timeout_s = 20.0
        self._gpus = contextlib.ExitStack()  # the GPUs the shared servers hold
        self.kv_baseline: dict[str, int] = {}  # kvcached used bytes at ready, per instance
        self.kv_ready: dict[str, InstanceSegments] = {}  # kvcached segments at ready
        atexit.register(self.close)

    def attach(self, cfg: Config, key: str, sweep_dir: Path, owner: str = "") -> dict[str, Any]:
        """Running servers for `cfg` (started now if the key changed): attach.json's content."""
        if key == self.key and all(s.exit_code() is None for s in self.servers):
            return {**self.info, "reused": True, "start_kv_held_bytes": self.held_now()}
        self.close()
        home = servers_home(sweep_dir, key)
        self.key, self.stop_timeout_s = key, cfg.engine.stop_timeout_s
        device_path = launch.device_path(cfg, home)
        launched = time.time()
        try:
            gpus = self._gpus.enter_context(point_gpus(cfg.engine, owner))  # held until close
            env = gpu_env(gpus, {}) or {}
            launch.start_servers(cfg, resolve_instances(cfg), home, self.servers, env=env)
        except BaseException:
            self.close()
            raise
        self.kv_baseline = {s.spec.name: seg.used_bytes for s in self.servers
                            if s.spec.ipc_name and (seg := read_segment(s.spec.ipc_name))}
        self.kv_ready = {s.spec.name: read_groups(s.spec.ipc_name) for s in self.servers
                         if s.spec.ipc_name}
        self.info = {
            "key": key,
            "gpus": gpus,
            "device_path": str(device_path) if device_path else None,
            "launch_time": launched,
            "ready_time": time.time(),
            "servers": [{**asdict(s.spec), "pid": s.proc.pid if s.proc else None,
                         "log_path": str(s.log_path)} for s in self.servers],
        }
        return {**self.info, "reused": False, "start_kv_held_bytes": self.held_now()}

    def held_now(self) -> dict[str, int]:
        """Each kvcached instance's held KV bytes (used + prealloc, all groups) now."""
        return {s.spec.name: read_groups(s.spec.ipc_name).total.held_bytes
                for s in self.servers if s.spec.ipc_name}

    def after_point(self, point_dir: Path, meta: dict[str, Any]) -> None:
        """Keep the servers for the next point only if this one ended well and they are idle."""
        if not self.servers:
            return
        keep, why = True, ""
        dead = [s for s in self.servers if s.exit_code() is not None]
        if dead:  # the point saw it go; only the process that started it knows how
            keep, why = False, "a server exited"
            mark_failed(point_dir, meta, "; ".join(str(s.died_error()) for s in dead))
        elif meta.get("status") != "ok":
            keep, why = False, "the point did not finish"
        else:
            t0 = time.monotonic()
            with httpx.Client() as client:
                while not all(is_idle(s, self.kv_baseline.get(s.spec.name), client)
                              for s in self.servers):
                    if time.monotonic() - t0 > IDLE_TIMEOUT_S:
                        keep, why = False, f"not idle {IDLE_TIMEOUT_S:g} s after the point"
                        break
                    time.sleep(0.2)
                for s in self.servers if keep else ():
                    ready = self.kv_ready.get(s.spec.name, InstanceSegments(""))
                    why = restore_ready_level(s, ready, self.kv_baseline.get(s.spec.name),
                                              client)
                    if why:
                        keep = False
                        break
            meta["servers_idle_after_s"] = round(time.monotonic() - t0, 3)
        meta["servers_kept"] = keep
        if not keep:
            meta["servers_stopped_because"] = why
            self.close()
        point_record.write(meta, point_dir)

    def close(self) -> None:
        """Stop every shared server and remove its kvcached segment."""
        with contextlib.suppress(Exception):
            launch.stop_servers(self.servers, self.stop_timeout_s)
        self.servers, self.key, self.info = [], None, {}
        self.kv_baseline, self.kv_ready = {}, {}
        self._gpus.close()


POOL = ServerPool()

