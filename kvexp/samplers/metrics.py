"""The engine's Prometheus `/metrics`: KV usage, queue depths, preemptions, pool size."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Container, Iterator
from dataclasses import dataclass

import httpx

from kvexp.results.records import InstanceHandle, Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromSample:
    name: str
    labels: dict[str, str]
    value: float


_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def parse_prometheus(text: str, names: Container[str] | None = None) -> Iterator[PromSample]:
    """Samples of a Prometheus text exposition (0.0.4); comments and bad lines skipped.

    With `names`, only samples of those metric names are parsed (the rest are skipped
    without reading their labels).
    """
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME_RE.match(line)
        if m is None or (names is not None and m.group(0) not in names):
            continue
        try:
            yield _parse_rest(line, m.group(0), m.end())
        except ValueError:
            continue


def _parse_rest(line: str, name: str, i: int) -> PromSample:
    n = len(line)
    labels: dict[str, str] = {}
    if i < n and line[i] == "{":
        i = _parse_labels(line, i + 1, labels)
    fields = line[i:].split()
    if not fields:
        raise ValueError(line)
    return PromSample(name, labels, float(fields[0]))


def _parse_labels(line: str, i: int, labels: dict[str, str]) -> int:
    """Parse `k="v",...}` from position i; return the position after the closing brace."""
    n = len(line)
    while True:
        while i < n and line[i] in " \t,":
            i += 1
        if i >= n:
            raise ValueError(line)
        if line[i] == "}":
            return i + 1
        eq = line.find("=", i)
        if eq < 0:
            raise ValueError(line)
        key = line[i:eq].strip()
        i = eq + 1
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] != '"':
            raise ValueError(line)
        i += 1
        value: list[str] = []
        while True:
            if i >= n:
                raise ValueError(line)
            c = line[i]
            if c == "\\" and i + 1 < n:
                nxt = line[i + 1]
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        labels[key] = "".join(value)


# kvexp metric -> (Prometheus names, first present wins; how label sets combine).
# vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc and exposed both for a while.
ENGINE_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "kv_cache_usage": (("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), "mean"),
    "num_requests_running": (("vllm:num_requests_running",), "sum"),
    "num_requests_waiting": (("vllm:num_requests_waiting",), "sum"),
    "num_preemptions": (("vllm:num_preemptions_total", "vllm:num_preemptions"), "sum"),
}
CACHE_CONFIG_INFO = "vllm:cache_config_info"
_WANTED = frozenset(
    {CACHE_CONFIG_INFO, *(n for names, _ in ENGINE_METRICS.values() for n in names)}
)
_WANTED_LINES = re.compile(
    r"^[ \t]*(?:" + "|".join(re.escape(n) for n in sorted(_WANTED)) + r")[{ \t][^\n]*",
    re.MULTILINE,
)


def engine_figures(text: str) -> dict[str, float]:
    """kvexp's engine metrics from a vLLM /metrics page; absent ones are left out.

    Label sets of one metric (engines, models) are summed, except the KV usage fraction,
    which is averaged. From `vllm:cache_config_info`: `num_gpu_blocks` (summed over label
    sets) and `block_size` (the largest).
    """
    by_name: dict[str, list[PromSample]] = {}
    wanted = "\n".join(m.group(0) for m in _WANTED_LINES.finditer(text))
    for s in parse_prometheus(wanted, _WANTED):
        by_name.setdefault(s.name, []).append(s)
    out: dict[str, float] = {}
    for metric, (names, how) in ENGINE_METRICS.items():
        for name in names:
            values = [s.value for s in by_name.get(name, ()) if not math.isnan(s.value)]
            if values:
                out[metric] = sum(values) / len(values) if how == "mean" else sum(values)
                break
    blocks: list[float] = []
    sizes: list[float] = []
    for s in by_name.get(CACHE_CONFIG_INFO, ()):
        for label, into in (("num_gpu_blocks", blocks), ("block_size", sizes)):
            try:
                into.append(float(s.labels[label]))
            except (KeyError, ValueError):
                pass
    if blocks:
        out["num_gpu_blocks"] = sum(blocks)
    if sizes:
        out["block_size"] = max(sizes)
    return out


class EngineMetricsSampler:
    """Per instance with a metrics path: the figures of `engine_figures`, source "engine".

    An instance that cannot be reached (not up yet, or gone), answers with an error
    status, or times out gives no samples for that tick; `failures` counts those.
    """

    source = "engine"

    def __init__(
        self, instances: list[InstanceHandle], interval_s: float, timeout_s: float = 0.5
    ) -> None:
        self.instances = instances
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures: dict[str, int] = {}
        self._warned: set[str] = set()
        self._client = httpx.Client(timeout=timeout_s, trust_env=False)

    def sample(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for inst in list(self.instances):
            if not inst.metrics_path:
                continue
            text = self._scrape(inst)
            if text is None:
                continue
            for metric, value in engine_figures(text).items():
                out.append(Sample(now, self.source, inst.name, metric, value))
        return out

    def _scrape(self, inst: InstanceHandle) -> str | None:
        url = inst.base_url.rstrip("/") + "/" + str(inst.metrics_path).lstrip("/")
        try:
            resp = self._client.get(url)
        except httpx.TransportError:
            self.failures[inst.name] = self.failures.get(inst.name, 0) + 1
            return None
        if resp.status_code != 200:
            self.failures[inst.name] = self.failures.get(inst.name, 0) + 1
            if inst.name not in self._warned:
                self._warned.add(inst.name)
                log.warning("%s: GET %s answered %d", inst.name, url, resp.status_code)
            return None
        return resp.text

    def close(self) -> None:
        self._client.close()
