"""engine=external: measure servers someone else runs (vLLM, the sim, any server with the
OpenAI completions API), as GuideLLM, AIPerf and `vllm bench serve` do.

It starts and stops nothing. Each instance is one base URL (`engine.options.urls`, in the
order of the instances); what it can reach is sampled, and what it cannot is said, in
point.json (`lacking_signals`) and in the point's log:
  - device memory: only with a local GPU named by `engine.options.gpu` (NVML);
  - the kvcached segment: only with the instance's `engine.options.ipc_names` entry, and on
    this host (/dev/shm);
  - the servers' processes: never (they are not kvexp's children);
  - engine metrics: unless `engine.options.metrics_path` is null.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvexp.engines.external.options import Options, options, problems
from kvexp.engines.servers import Server

AUTO_RANK = None  # engine=auto never picks servers it cannot see
ENV_PREFIXES: tuple[str, ...] = ()  # its servers inherit nothing from kvexp

__all__ = ["Options", "options"]


class ExternalServer(Server):
    """A server someone else started: watched through its health URL, never stopped."""

    owned = False

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)


def build_launch(cfg: Any, inst: Any, home: Path, port: int, ipc: str | None) -> Any:
    from kvexp.config import resolve_instances
    from kvexp.engines.base import LaunchSpec

    o = options(cfg)
    i = [x.name for x in resolve_instances(cfg)].index(inst.name)
    host, url_port = o.hosts_ports()[i]
    return LaunchSpec(name=inst.name, argv=[], env={}, host=host, port=url_port,
                      served_model=o.models[i] if o.models else inst.model.name,
                      ipc_name=o.ipc_names[i] if o.ipc_names else None,
                      health_path=o.health_path, metrics_path=o.metrics_path)


def device_path(cfg: Any, home: Path) -> None:
    return None


def device_source(cfg: Any, path: Path | None, gpu: int | None) -> tuple[Any, str]:
    o = options(cfg)
    if o.gpu is None:
        return None, ""
    from kvexp.samplers.device import NvmlSource

    return NvmlSource(o.gpu), "nvml"


def uses_gpus(engine: Any) -> bool:
    return False  # the servers hold their GPUs already


def shareable(cfg: Any) -> bool:
    return False  # nothing is started, so nothing is saved by sharing


def available(cfg: Any) -> tuple[bool, str]:
    return False, "engine=external is chosen by name only"


def check(cfg: Any, insts: list[Any]) -> list[str]:
    return problems(cfg.engine.options, len(insts))


def lacking(cfg: Any) -> dict[str, str]:
    o = options(cfg)
    out = {"processes": "the servers are not kvexp's children: no process tree to sample"}
    if o.gpu is None:
        out["device"] = "no local GPU named (engine.options.gpu): no device memory"
    else:
        from kvexp.gpus import nvml

        try:
            with nvml():
                pass
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError: no usable NVML
            out["device"] = f"NVML unusable on this host: {exc}"
    if not o.ipc_names or not any(o.ipc_names):
        out["kvcached"] = "no kvcached IPC name (engine.options.ipc_names): no segment"
    if o.metrics_path is None:
        out["engine_metrics"] = "engine.options.metrics_path is null: no /metrics"
    return out


def start_server(spec: Any, log_path: Path) -> ExternalServer:
    return ExternalServer(spec, log_path)
