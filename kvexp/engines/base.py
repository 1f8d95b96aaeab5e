"""What the runner needs to know to start an engine server: data, not behaviour."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LaunchSpec:
    name: str  # instance name
    argv: list[str]  # command to start the server
    env: dict[str, str]  # variables added to the parent's environment
    host: str
    port: int
    served_model: str  # value for requests' "model" field
    ipc_name: str | None = None  # kvcached segment name, if the instance has one
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
