"""Engines, one package each: `kvexp/engines/<kind>/`, found by `engine.kind`.

An engine package exposes the same small interface (the `Engine` protocol below); nothing
outside `kvexp/engines/` asks which engine it is. A new engine is a new package here plus
`conf/engine/<kind>.yaml`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

AUTO = "auto"  # engine=auto: the first available engine by AUTO_RANK (kvexp/engines/choice.py)


@runtime_checkable
class Engine(Protocol):
    """What a sweep and a point need of an engine."""

    AUTO_RANK: int  # engine=auto tries lower ranks first; None: never chosen by auto
    # Prefixes of the environment variables its servers read from the environment they
    # inherit (recorded, credentials redacted, as each server's `inherited_env`).
    ENV_PREFIXES: tuple[str, ...]

    def build_launch(self, cfg: Any, inst: Any, home: Path, port: int, ipc: str | None) -> Any:
        """The LaunchSpec that starts instance `inst`'s server on `port` (ipc: its kvcached
        segment name, None for a static pool)."""

    def device_path(self, cfg: Any, home: Path) -> Path | None:
        """The file the servers started in `home` share as their device (None: a real one)."""

    def device_source(self, cfg: Any, device_path: Path | None, gpu: int | None
                      ) -> tuple[Any, str]:
        """The device-memory source of a point and its name ((None, "") for none)."""

    def uses_gpus(self, engine: Any) -> bool:
        """Whether a point of this engine holds a slot of real GPUs."""

    def shareable(self, cfg: Any) -> bool:
        """Whether a running server may serve the next point (no state carried over)."""

    def available(self, cfg: Any) -> tuple[bool, str]:
        """Whether engine=auto may choose it, and why (in words)."""

    def check(self, cfg: Any, insts: list[Any]) -> list[str]:
        """Config problems only this engine knows of (empty: none)."""

    def lacking(self, cfg: Any) -> dict[str, str]:
        """The signals a point of this engine cannot measure, each with the reason."""

    def start_server(self, spec: Any, log_path: Path) -> Any:
        """The object that starts, watches and stops one server (kvexp/engines/servers.py's
        Server for an engine kvexp starts)."""


def kinds() -> list[str]:
    """Every engine kind: the packages in kvexp/engines/."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def check_kind(kind: str) -> list[str]:
    """The problem with `engine.kind` (empty: a known engine, or auto)."""
    if kind == AUTO or kind in kinds():
        return []
    return [f"engine.kind must be one of {(AUTO, *kinds())}, got {kind!r}"]


def check(cfg: Any, insts: list[Any]) -> list[str]:
    """What the point's engine finds wrong with the config (nothing to say for auto)."""
    return [] if cfg.engine.kind == AUTO else get(cfg.engine.kind).check(cfg, insts)


def shareable(cfg: Any) -> bool:
    """Whether the point's servers may serve the next point (auto: whichever it becomes)."""
    chosen = [k for k in kinds() if get(k).AUTO_RANK is not None] \
        if cfg.engine.kind == AUTO else [cfg.engine.kind]
    return all(get(k).shareable(cfg) for k in chosen)


def env_prefixes() -> tuple[str, ...]:
    """Every engine's ENV_PREFIXES, in one tuple (each once): the variables of the inherited
    environment that may change some server's behaviour."""
    return tuple(dict.fromkeys(p for k in kinds() for p in get(k).ENV_PREFIXES))


def get(kind: str) -> Engine:
    """The engine package of `kind` (ValueError naming the known kinds if there is none)."""
    if problems := check_kind(kind):
        raise ValueError(problems[0])
    module: ModuleType = importlib.import_module(f"kvexp.engines.{kind}")
    return module  # type: ignore[return-value]
