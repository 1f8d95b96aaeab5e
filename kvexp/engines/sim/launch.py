"""The sim's launch spec: the JSON file a sim server starts from, and the LaunchSpec for it.

Keys: name, host, port, served_model, model (ModelConfig fields), allocator
(AllocatorConfig fields), sim (SimEngineConfig fields), device_path, ipc_name
(None for a static pool), seed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kvexp.config import (
    AllocatorConfig,
    EngineConfig,
    ModelConfig,
    ResolvedInstance,
    SimEngineConfig,
)
from kvexp.engines.base import LaunchSpec

T = TypeVar("T")


@dataclass
class SimSpec:
    name: str
    host: str
    port: int
    served_model: str
    model: ModelConfig
    allocator: AllocatorConfig
    sim: SimEngineConfig
    device_path: Path
    ipc_name: str | None
    seed: int


def _as_dict(obj: Any) -> dict[str, Any]:
    """A config section as a plain dict (a dataclass or an OmegaConf node)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(obj, resolve=True))  # type: ignore[arg-type]


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


def spec_to_json(spec: SimSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "host": spec.host,
        "port": spec.port,
        "served_model": spec.served_model,
        "model": _as_dict(spec.model),
        "allocator": _as_dict(spec.allocator),
        "sim": _as_dict(spec.sim),
        "device_path": str(spec.device_path),
        "ipc_name": spec.ipc_name,
        "seed": spec.seed,
    }


def write_spec(spec: SimSpec, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec_to_json(spec), indent=2))
    return path


def load_spec(path: Path) -> SimSpec:
    d = json.loads(Path(path).read_text())
    return SimSpec(
        name=d["name"],
        host=d["host"],
        port=int(d["port"]),
        served_model=d["served_model"],
        model=_from_dict(ModelConfig, d["model"]),
        allocator=_from_dict(AllocatorConfig, d["allocator"]),
        sim=_from_dict(SimEngineConfig, d["sim"]),
        device_path=Path(d["device_path"]),
        ipc_name=d.get("ipc_name"),
        seed=int(d.get("seed", 0)),
    )


def calibrated(sim: SimEngineConfig) -> SimEngineConfig:
    """`sim` with the settings of its `calibration` file (kvexp calibrate's output) applied."""
    if not sim.calibration:
        return sim
    from kvexp.engines.sim.calibrate import load_calibration

    return dataclasses.replace(sim, **load_calibration(Path(sim.calibration)))


def build_sim_launch(
    inst: ResolvedInstance,
    engine: EngineConfig,
    point_dir: Path,
    port: int,
    device_path: Path,
    ipc_name: str | None,
    seed: int,
) -> LaunchSpec:
    """Write `point_dir/sim-<name>.json` and return how to start a sim server on it."""
    model = _from_dict(ModelConfig, _as_dict(inst.model))
    allocator = _from_dict(AllocatorConfig, _as_dict(inst.allocator))
    sim = calibrated(_from_dict(SimEngineConfig, _as_dict(engine.sim)))
    elastic = allocator.kind == "kvcached"
    spec = SimSpec(
        name=inst.name,
        host=engine.host,
        port=port,
        served_model=model.hub_id or model.name,
        model=model,
        allocator=allocator,
        sim=sim,
        device_path=Path(device_path),
        ipc_name=ipc_name if elastic else None,
        seed=seed,
    )
    path = write_spec(spec, Path(point_dir) / f"sim-{inst.name}.json")
    env = {"PYTHONUNBUFFERED": "1"}
    if elastic and ipc_name:
        env |= {"ENABLE_KVCACHED": "true", "KVCACHED_IPC_NAME": ipc_name}
        env |= allocator.kvcached_env()
    return LaunchSpec(
        name=inst.name,
        argv=[sys.executable, "-m", "kvexp.engines.sim", "--spec", str(path)],
        env=env,
        host=engine.host,
        port=port,
        served_model=spec.served_model,
        ipc_name=spec.ipc_name,
    )
