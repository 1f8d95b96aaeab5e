"""Start the servers of a point's instances through their engine: used by a point that
starts its own (kvexp/point/runner.py) and by the sweep's shared servers
(kvexp/sweep/server_pool.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from kvexp import engines, kvcached_segment
from kvexp.config import Config, ResolvedInstance
from kvexp.engines.base import LaunchSpec
from kvexp.engines.servers import PortTaken, Server, free_port, wait_ready
from kvexp.kvcached_segment import remove_segment


def ipc_name(inst: ResolvedInstance, tag: str) -> str | None:
    """The kvcached segment name of an instance's server (None: a static pool). The one
    place that names segments."""
    if inst.allocator.kind != "kvcached":
        return None
    return kvcached_segment.ipc_name(inst.name, tag)


def device_path(cfg: Config, home: Path) -> Path | None:
    """The shared device file of the servers started in `home` (None: a real device)."""
    return engines.get(cfg.engine.kind).device_path(cfg, home)


def launch_spec(cfg: Config, inst: ResolvedInstance, home: Path, tag: str, port: int
                ) -> LaunchSpec:
    """How to start one instance's server on `port`."""
    return engines.get(cfg.engine.kind).build_launch(cfg, inst, home, port, ipc_name(inst, tag))


def start_servers(cfg: Config, insts: list[ResolvedInstance], home: Path,
                  started: list[Server], on_start: Callable[[Server], None] | None = None,
                  env: dict[str, str] | None = None) -> None:
    """Start every instance's server and wait until all are ready. With `sequential_start`,
    a static pool starts only once every server before it is ready, and is ready itself
    before the next starts (vLLM sizes a static pool from the memory it sees); kvcached
    instances start at once (their KV is mapped on demand). Each server goes into `started`
    as soon as it runs, so that the caller can stop it whatever happens, and records its
    start and ready times. A port picked here that someone takes first is picked again.
    `env` is added to every server's environment (e.g. the GPUs a shared server may use)."""
    tag = secrets.token_hex(3)  # unique per start: segments of concurrent runs never collide
    engine = engines.get(cfg.engine.kind)
    for inst in insts:
        one_by_one = cfg.engine.sequential_start and inst.allocator.kind == "static"
        if one_by_one:
            wait_ready(started, cfg.engine.ready_timeout_s)
        for attempt in range(3):
            spec = launch_spec(cfg, inst, home, tag, inst.port or free_port(cfg.engine.host))
            spec.env.update(env or {})
            server = engine.start_server(spec, home / "logs" / f"{spec.name}.log")
            try:
                server.start()
                break
            except PortTaken:
                if inst.port is not None or attempt == 2:
                    raise
        started.append(server)
        if on_start is not None:
            on_start(server)
        if one_by_one:
            wait_ready([server], cfg.engine.ready_timeout_s)
    wait_ready([s for s in started if s.ready_time is None], cfg.engine.ready_timeout_s)


def stop_servers(servers: list[Server], timeout_s: float) -> None:
    """Stop the servers started here and remove their kvcached segments (a killed kvcached
    engine leaves its segment behind); servers started by someone else are left alone."""
    for s in servers:
        s.stop(timeout_s)
    for s in servers:
        if s.spec.ipc_name and s.owned:
            remove_segment(s.spec.ipc_name)
