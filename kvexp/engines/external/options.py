"""`engine.options` of engine=external: the servers to measure, checked key by key."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Options:
    urls: list[str]  # one base URL per instance, e.g. http://127.0.0.1:8000
    models: list[str] | None = None  # served model names; None = each instance's model.name
    ipc_names: list[str | None] | None = None  # kvcached segments (/dev/shm), if on this host
    metrics_path: str | None = "/metrics"  # Prometheus page; None: the servers have none
    health_path: str = "/health"
    gpu: int | None = None  # NVML index of the local GPU the servers run on; None: none

    def hosts_ports(self) -> list[tuple[str, int]]:
        out = []
        for url in self.urls:
            parts = urlsplit(url)
            out.append((parts.hostname or "", parts.port or 80))
        return out


def _plain(opts: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(opts, DictConfig):
        return OmegaConf.to_container(opts, resolve=True)  # type: ignore[return-value]
    return dict(opts or {})


def problems(opts: Any, n_instances: int) -> list[str]:
    """What is wrong with `engine.options` for `n_instances` instances (empty: fine)."""
    d = _plain(opts)
    known = {f.name for f in fields(Options)}
    errs = [f"engine.options.{k} is not a setting of engine=external (known: "
            f"{', '.join(sorted(known))})" for k in sorted(set(d) - known)]
    urls = d.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not urls or not isinstance(urls, list):
        return errs + ["engine.options.urls must list the base URL of each running server"]
    for u in urls:
        p = urlsplit(str(u))
        if p.scheme != "http" or not p.hostname or p.path not in ("", "/"):
            errs.append(f"engine.options.urls: {u!r} is not http://HOST[:PORT]")
    if len(urls) != n_instances:
        errs.append(f"engine.options.urls lists {len(urls)} server(s) for {n_instances} "
                    "instance(s): one URL per instance, in the order of the instances")
    for key in ("models", "ipc_names"):
        v = d.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != len(urls)):
            errs.append(f"engine.options.{key} must list one entry per URL ({len(urls)})")
    gpu = d.get("gpu")
    if gpu is not None and (not isinstance(gpu, int) or gpu < 0):
        errs.append(f"engine.options.gpu must be a GPU index >= 0 or null, got {gpu!r}")
    return errs


def options(cfg: Any) -> Options:
    """The checked options of a point's config."""
    d = _plain(cfg.engine.options)
    if isinstance(d.get("urls"), str):
        d["urls"] = [d["urls"]]
    return Options(**d)
