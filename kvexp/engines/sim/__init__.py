"""kvexp's simulated engine: a vLLM-shaped server on a simulated GPU (no real device).

It serves the OpenAI subset kvexp uses, reports vLLM's metric names and keeps its
memory on a `SimDevice` shared by every sim server of a run, with either a static
KV pool (vLLM) or an elastic one (kvcached's model, including its shm segment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvexp.engines.servers import Server

AUTO_RANK = 100  # engine=auto's fallback: always available
ENV_PREFIXES = ("KVEXP_",)  # a sim server is kvexp: KVEXP_SHM_DIR places its segment


def build_launch(cfg: Any, inst: Any, home: Path, port: int, ipc: str | None) -> Any:
    """The LaunchSpec of one sim server (its spec file is written into `home`)."""
    from kvexp.engines.sim.launch import build_sim_launch

    return build_sim_launch(inst, cfg.engine, home, port, device_path(cfg, home), ipc,
                            cfg.seed)


def device_path(cfg: Any, home: Path) -> Path:
    """The simulated device every sim server started in `home` shares."""
    return home / "sim-device.json"


def device_source(cfg: Any, path: Path | None, gpu: int | None) -> tuple[Any, str]:
    from kvexp.samplers.sim import SimDeviceSource

    return SimDeviceSource(path), "sim_device"


def uses_gpus(engine: Any) -> bool:
    return False


def shareable(cfg: Any) -> bool:
    return True  # the sim keeps no cache between requests


def available(cfg: Any) -> tuple[bool, str]:
    return True, "the sim runs anywhere"


def check(cfg: Any, insts: list[Any]) -> list[str]:
    return []


def lacking(cfg: Any) -> dict[str, str]:
    return {}


def start_server(spec: Any, log_path: Path) -> Server:
    return Server(spec, log_path)
