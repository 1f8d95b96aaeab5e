"""`python -m kvexp.engines.sim --spec SPEC.json`: run one simulated engine server.

Exit codes: 0 after SIGTERM/SIGINT, 1 if the device cannot hold the instance or the
engine's step loop died (logged, /health 503 meanwhile). Memory is released on every
exit path: the pool, its segment and the device registration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from kvexp.engines.sim.device import InsufficientMemory, SimDevice
from kvexp.engines.sim.engine import SimEngine
from kvexp.engines.sim.faults import Fault
from kvexp.engines.sim.footprint import activation_bytes, context_bytes
from kvexp.engines.sim.gpus import MiB, get_gpu
from kvexp.engines.sim.launch import SimSpec, load_spec
from kvexp.engines.sim.memory import ElasticPool, KvPool, StaticPool
from kvexp.engines.sim.server import SimApi
from kvexp.engines.sim.sharing import StepBoard

log = logging.getLogger("kvexp.sim")


class EngineDied(RuntimeError):
    """The sim's engine task died; the server stopped."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `run()` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def elastic(spec: SimSpec) -> bool:
    """True if the instance gets kvcached's pool (not under the no_kvcached fault)."""
    if spec.allocator.kind == "kvcached" and spec.sim.fault == "no_kvcached":
        return False
    return spec.allocator.kind == "kvcached"


def _make_pool(spec: SimSpec, device: SimDevice, activation: int) -> KvPool:
    args = (device, spec.name, spec.model, spec.allocator, spec.sim.block_size, activation)
    if elastic(spec):
        if not spec.ipc_name:
            raise ValueError("a kvcached (elastic) sim instance needs an ipc_name")
        return ElasticPool(*args, ipc_name=spec.ipc_name)
    if spec.allocator.kind == "kvcached":
        log.error(
            "kvexp sim engine (simulated): FAULT INJECTED: no_kvcached (kvcached not "
            "importable: vLLM's static pool, no segment %s)",
            spec.ipc_name,
        )
        return StaticPool(*args)
    if spec.allocator.kind == "static":
        return StaticPool(*args)
    raise ValueError(f"unknown allocator kind {spec.allocator.kind!r} (kvcached | static)")


def _release(what: str, action: Callable[[], object]) -> None:
    """Run one release step; log (never raise) its failure so the next one still runs."""
    try:
        action()
    except Exception:
        log.exception("kvexp sim engine (simulated): releasing %s failed", what)


async def run(spec: SimSpec) -> None:
    """Start one sim instance, serve until SIGTERM/SIGINT, then give its memory back.

    Raises EngineDied (after releasing everything) if the engine's step loop died.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server: _Server | None = None
    died: list[BaseException] = []

    def on_signal() -> None:
        stop.set()
        if server is not None:
            server.should_exit = True

    def on_death(error: BaseException) -> None:
        log.error(
            "kvexp sim engine (simulated): the engine task died: %r; /health is 503 and the "
            "server exits",
            error,
            exc_info=error,
        )
        died.append(error)
        on_signal()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    gpu = get_gpu(spec.sim.gpu)
    device = SimDevice(spec.device_path, gpu)
    activation = activation_bytes(spec.model, spec.sim.max_batch, spec.sim.sampler_logit_copies)
    context = context_bytes(spec.sim, gpu, elastic(spec))
    device.register(spec.name, os.getpid(), context, spec.model.weight_bytes, activation)
    pool: KvPool | None = None
    engine: SimEngine | None = None
    board: StepBoard | None = None
    try:
        pool = _make_pool(spec, device, activation)
        if spec.sim.share_gpu:
            board = StepBoard(spec.device_path)
        log.info(
            "kvexp sim engine (simulated, not a real GPU): instance %s serving %s on a simulated "
            "%s (%s MiB); %s KV pool of %d blocks x %d tokens, holding %s MiB; weights %s MiB, "
            "activations %s MiB, context %s MiB",
            spec.name,
            spec.served_model,
            gpu.name,
            f"{gpu.total_bytes // MiB:,}",
            "kvcached" if elastic(spec) else "static",
            pool.capacity_blocks,
            pool.block_size,
            f"{pool.held_bytes // MiB:,}",
            f"{spec.model.weight_bytes // MiB:,}",
            f"{activation // MiB:,}",
            f"{context // MiB:,}",
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), spec.sim.startup_s * spec.sim.time_scale)
        if stop.is_set():
            return
        fault = Fault(spec.sim.fault, spec.sim.fault_after_s * spec.sim.time_scale)
        engine = SimEngine(
            spec.model, spec.sim, gpu, pool, seed=spec.seed, step_hook=fault.check_engine,
            board=board,
        )
        engine.start(on_death)
        config = uvicorn.Config(
            SimApi(engine, spec.served_model, fault).app(),
            host=spec.host,
            port=spec.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        log.info("kvexp sim engine (simulated): serving on http://%s:%d", spec.host, spec.port)
        await server.serve()
    finally:
        if engine is not None:
            await engine.stop()
        if pool is not None:
            _release("the KV pool", pool.close)
        _release("the device registration", lambda: device.unregister(spec.name))
        if board is not None:
            _release("the step board slot", board.close)
        log.info("kvexp sim engine (simulated): instance %s stopped, memory released", spec.name)
    if died:
        raise EngineDied(f"the engine task died: {died[0]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvexp.engines.sim", description="kvexp's simulated engine server"
    )
    parser.add_argument("--spec", type=Path, required=True, help="JSON written by launch.py")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s kvexp-sim %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(run(load_spec(args.spec)))
    except (InsufficientMemory, EngineDied) as e:
        logging.getLogger("kvexp.sim").error("kvexp sim engine (simulated): %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
