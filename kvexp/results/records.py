"""The records that flow between kvexp's stages (schedules, driver, samplers, results)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestSpec:
    """One request of a schedule: what to send, to which instance, and when."""

    request_id: int
    instance: str  # name of the engine instance it goes to
    at_s: float  # scheduled send time, seconds after the workload starts
    max_tokens: int
    temperature: float = 0.7
    ignore_eos: bool = False
    api: str = "chat"  # "chat" (/v1/chat/completions) or "completions" (/v1/completions)
    prompt: str | None = None  # text prompt (chat message or completion prompt)
    prompt_token_ids: list[int] | None = None  # token ids (completions only)
    wave: int = -1  # wave / round / phase index for bursty workloads, -1 if none


@dataclass
class RequestRow:
    """What the driver measured for one request. Times are epoch seconds (see Clock)."""

    request_id: int
    instance: str
    wave: int
    api: str
    scheduled_time: float  # when the schedule said to send it
    sent_time: float  # when it was actually sent
    send_lag_s: float  # sent_time - scheduled_time: the load generator's own error
    first_token_time: float | None = None
    end_time: float | None = None  # last chunk with choices (or failure)
    ttft_s: float | None = None  # sent -> first chunk with choices
    e2e_s: float | None = None  # sent -> end_time
    tpot_s: float | None = None  # (e2e - ttft) / (completion_tokens - 1)
    itl_s: list[float] = field(default_factory=list)  # every gap between chunks with choices
    tokens_per_event: list[int] = field(default_factory=list)  # per chunk; continuous usage only
    prompt_tokens: int | None = None  # from the server's usage
    completion_tokens: int | None = None  # from the server's usage
    max_tokens: int = 0
    status: int | None = None  # HTTP status, None if no response at all
    ok: bool = False
    error: str = ""


@dataclass(frozen=True)
class Sample:
    """One timestamped measurement from a sampler."""

    time: float  # epoch seconds (Clock.now())
    source: str  # "nvml", "sim_device", "process", "kvcached", "engine"
    instance: str  # engine instance name, "" for device-wide figures
    metric: str  # e.g. "device_used_bytes", "kv_used_bytes", "num_requests_running"
    value: float


@dataclass
class InstanceHandle:
    """A running engine instance as samplers and the driver see it."""

    name: str
    base_url: str  # e.g. http://127.0.0.1:8000
    pid: int | None = None  # the server's root process
    ipc_name: str | None = None  # kvcached segment name (/dev/shm/<ipc_name>), if any
    metrics_path: str | None = "/metrics"  # Prometheus endpoint, None if the engine has none
    served_model: str = ""  # the name to put in requests' "model" field
