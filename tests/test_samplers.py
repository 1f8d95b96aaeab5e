"""Samplers: attribution to process trees, timing on one clock, each signal's figures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from kvexp import kvcached_segment as seg
from kvexp.clock import Clock
from kvexp.config import SamplerConfig
from kvexp.kvcached_segment import write_segment
from kvexp.results.records import InstanceHandle, Sample
from kvexp.samplers import (
    DeviceSampler,
    EngineMetricsSampler,
    KvcachedSampler,
    ProcessSampler,
    SamplerGroup,
    SimDeviceSource,
    build_samplers,
    engine_figures,
    parse_prometheus,
)
from kvexp.samplers.device import DeviceUnavailable, NvmlSource

GiB = 1 << 30


class FakeDevice:
    def __init__(self, processes: dict[int, int], total: int = 80 * GiB, used: int = 10 * GiB):
        self.processes = processes
        self.total = total
        self.used = used
        self.calls = 0

    def total_bytes(self) -> int:
        return self.total

    def used_bytes(self) -> int:
        self.calls += 1
        return self.used

    def process_used(self) -> dict[int, int]:
        return dict(self.processes)


def by_metric(samples: list[Sample], instance: str | None = None) -> dict[str, float]:
    return {s.metric: s.value for s in samples if instance is None or s.instance == instance}


@pytest.fixture
def tree() -> Iterator[tuple[int, int, int]]:
    """A server-like process tree: root -> child -> grandchild, each a sleeping python."""
    leaf = "import time; time.sleep(30)"
    mid = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', {leaf!r}])\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    root = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', {mid!r}],\n"
        "                      stdout=subprocess.PIPE, text=True)\n"
        "print(c.pid, c.stdout.readline().strip(), flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", root], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child, grandchild = map(int, proc.stdout.readline().split())
    try:
        yield proc.pid, child, grandchild
    finally:
        for pid in (grandchild, child, proc.pid):
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(5)


def test_device_sampler_sums_the_process_tree(tree: tuple[int, int, int]) -> None:
    parent, child, grandchild = tree
    src = FakeDevice(
        {parent: 3 * GiB, child: 2 * GiB, grandchild: 4 * GiB, os.getpid(): 7 * GiB, 10**9: GiB}
    )
    instances = [
        InstanceHandle("a", "http://x", pid=parent),
        InstanceHandle("nopid", "http://x", pid=None),
    ]
    samples = DeviceSampler(src, instances, 0.1, "nvml").sample(123.0)
    assert all(s.time == 123.0 and s.source == "nvml" for s in samples)
    assert by_metric(samples, "") == {
        "device_used_bytes": 10 * GiB,
        "device_total_bytes": 80 * GiB,
    }
    assert by_metric(samples, "a") == {"process_gpu_bytes": 9 * GiB}
    assert not by_metric(samples, "nopid")


def test_device_sampler_reads_the_instance_list_each_tick(tree: tuple[int, int, int]) -> None:
    parent, _, grandchild = tree
    instances: list[InstanceHandle] = []
    sampler = DeviceSampler(FakeDevice({grandchild: 2 * GiB}), instances, 0.1)
    assert {s.metric for s in sampler.sample(1.0)} == {"device_used_bytes", "device_total_bytes"}
    instances.append(InstanceHandle("late", "http://x", pid=parent))
    assert by_metric(sampler.sample(2.0), "late") == {"process_gpu_bytes": 2 * GiB}


def test_device_sampler_skips_dead_servers() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sampler = DeviceSampler(
        FakeDevice({}), [InstanceHandle("gone", "http://x", pid=dead.pid)], 0.1, device_wide=False
    )
    assert sampler.sample(1.0) == []


def test_process_sampler_rss_covers_the_tree(tree: tuple[int, int, int]) -> None:
    instances = [InstanceHandle("a", "http://x", pid=tree[0])]
    got = by_metric(ProcessSampler(instances, 0.1).sample(1.0), "a")
    rss = [psutil.Process(pid).memory_info().rss for pid in tree]
    assert got["rss_bytes"] > sum(rss) - min(rss)
    assert got["rss_bytes"] == pytest.approx(sum(rss), rel=0.1)


def test_process_sampler_skips_dead_and_missing_pids() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    instances = [
        InstanceHandle("gone", "http://x", pid=dead.pid),
        InstanceHandle("nopid", "http://x"),
    ]
    assert ProcessSampler(instances, 0.1).sample(1.0) == []


class OffsetClock(Clock):
    """A clock a day ahead of the wall clock, so its timestamps are recognisable."""

    def now(self) -> float:
        return super().now() + 86400.0


class SlowDevice(FakeDevice):
    """Takes 10 ms per read: a drifting loop (sleep(interval) after each tick) falls behind."""

    def used_bytes(self) -> int:
        time.sleep(0.01)
        return super().used_bytes()


def test_group_samples_at_20hz_on_the_given_clock() -> None:
    clock = OffsetClock()
    sampler = DeviceSampler(SlowDevice({}), [], 0.05, "nvml")
    group = SamplerGroup([sampler], clock)
    t0 = clock.now()
    with group:
        time.sleep(1.0)
    t1 = clock.now()
    times = [s.time for s in group.samples() if s.metric == "device_used_bytes"]
    assert 18 <= len(times) <= 22
    assert times == sorted(times) and len(set(times)) == len(times)
    assert t0 <= times[0] and times[-1] <= t1
    assert times[0] > time.time() + 3600
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, abs=0.005)


def test_group_stop_joins_and_drain_empties() -> None:
    sampler = DeviceSampler(FakeDevice({}), [], 0.01, "nvml")
    group = SamplerGroup([sampler], Clock())
    group.start()
    time.sleep(0.1)
    group.stop()
    assert not group.running
    n = len(group.samples())
    assert n > 0
    time.sleep(0.05)
    assert len(group.samples()) == n
    assert len(group.drain()) == n
    assert group.samples() == []


class Raising:
    source = "broken"
    interval_s = 0.01

    def __init__(self) -> None:
        self.calls = 0

    def sample(self, now: float) -> list[Sample]:
        self.calls += 1
        raise RuntimeError("boom")

    def close(self) -> None:
        raise RuntimeError("close boom")


def test_a_raising_sampler_does_not_stop_the_group(caplog: pytest.LogCaptureFixture) -> None:
    bad = Raising()
    good = DeviceSampler(FakeDevice({}), [], 0.01, "nvml")
    group = SamplerGroup([bad, good], Clock())
    with caplog.at_level(logging.WARNING, logger="kvexp.samplers.base"):
        with group:
            time.sleep(0.3)
    assert bad.calls > 5
    assert len([s for s in group.samples() if s.metric == "device_used_bytes"]) > 5
    assert group.errors() == {"broken": bad.calls}
    raised = [r for r in caplog.records if "boom" in r.getMessage() and "close" not in r.message]
    assert len(raised) == 1


def test_kvcached_sampler_reads_segments(tmp_path: Path) -> None:
    write_segment("kvexp_a", 4 * GiB, GiB, 256 << 20, shm_dir=tmp_path)
    instances = [
        InstanceHandle("a", "http://x", ipc_name="kvexp_a"),
        InstanceHandle("b", "http://x", ipc_name="kvexp_missing"),
        InstanceHandle("c", "http://x"),
    ]
    samples = KvcachedSampler(instances, 0.1, shm_dir=tmp_path).sample(5.0)
    assert {s.instance for s in samples} == {"a"}
    assert all(s.source == "kvcached" and s.time == 5.0 for s in samples)
    assert by_metric(samples) == {
        "kv_limit_bytes": 4 * GiB,
        "kv_used_bytes": GiB,
        "kv_prealloc_bytes": 256 << 20,
        "kv_held_bytes": GiB + (256 << 20),
    }


def test_kvcached_sampler_sums_group_segments_and_keeps_each(tmp_path: Path) -> None:
    write_segment("kvc_h", 4 * GiB, GiB, 96 << 20, shm_dir=tmp_path)  # group 0
    write_segment("kvc_h_g1", 2 * GiB, 48 << 20, 0, shm_dir=tmp_path)
    write_segment("kvc_h_g2", GiB, 0, 48 << 20, shm_dir=tmp_path)
    write_segment("kvc_h_gx", 9 * GiB, 9 * GiB, 0, shm_dir=tmp_path)  # not a group name
    write_segment("kvc_h_g1_g1", 9 * GiB, 9 * GiB, 0, shm_dir=tmp_path)
    instances = [InstanceHandle("h", "http://x", ipc_name="kvc_h")]
    got = by_metric(KvcachedSampler(instances, 0.01, shm_dir=tmp_path).sample(1.0))
    assert got["kv_limit_bytes"] == 7 * GiB
    assert got["kv_used_bytes"] == GiB + (48 << 20)
    assert got["kv_held_bytes"] == GiB + (192 << 20)
    assert (got["kv_used_bytes_g0"], got["kv_used_bytes_g1"], got["kv_used_bytes_g2"]) == (
        GiB, 48 << 20, 0)
    assert got["kv_prealloc_bytes_g2"] == 48 << 20 and "kv_used_bytes_g3" not in got


def test_kvcached_sampler_finds_a_group_segment_that_appears_later(tmp_path: Path) -> None:
    write_segment("kvc_l", 4 * GiB, GiB, 0, shm_dir=tmp_path)
    sampler = KvcachedSampler([InstanceHandle("l", "http://x", ipc_name="kvc_l")], 0.01,
                              shm_dir=tmp_path, groups_ttl_s=0.0)
    assert by_metric(sampler.sample(1.0))["kv_used_bytes"] == GiB
    write_segment("kvc_l_g1", GiB, GiB, 0, shm_dir=tmp_path)
    assert by_metric(sampler.sample(2.0))["kv_used_bytes"] == 2 * GiB
    (tmp_path / "kvc_l_g1").unlink()
    assert by_metric(sampler.sample(3.0))["kv_used_bytes"] == GiB


def test_kvcached_sampler_defaults_to_100hz() -> None:
    assert SamplerConfig().interval("kvcached") == 0.01
    with pytest.raises(ValueError, match="-1"):
        KvcachedSampler([], -1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("kvexp_a.b c/d", "kvexp_a-b-c-d"),
        ("x" * 70, "x" * 64),
        ("é-ok_1", "é-ok_1"),  # str.isalnum, as kvcached tests characters
    ],
)
def test_kvcached_ipc_name_as_kvcached_cuts_it(name: str, expected: str) -> None:
    assert seg.kvcached_ipc_name(name) == expected


def test_ipc_name_fits_kvcached_and_keeps_the_tag() -> None:
    short = seg.ipc_name("qwen2.5-0.5b", "ab12cd")
    assert short == "kvcached_qwen2-5-0-5b_ab12cd"
    long = seg.ipc_name("m" * 100, "ab12cd")
    assert len(long) == 64 and long.endswith("_ab12cd")
    assert seg.kvcached_ipc_name(long) == long
    with pytest.raises(ValueError, match="tag"):
        seg.ipc_name("m", "")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "a..b"])
def test_segment_names_with_paths_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(seg.InvalidSegmentName, match="invalid kvcached segment name"):
        seg.segment_path(name, tmp_path)


def test_wait_for_segments_returns_when_a_limit_appears(tmp_path: Path) -> None:
    write_segment("kvc_w", 0, 0, 0, shm_dir=tmp_path)  # created, limit not yet set
    timer = threading.Timer(0.2, write_segment, ("kvc_w", GiB), {"shm_dir": tmp_path})
    timer.start()
    try:
        got = seg.wait_for_segments("kvc_w", timeout_s=10.0, poll_s=0.02, shm_dir=tmp_path)
    finally:
        timer.cancel()
    assert got.total.limit_bytes == GiB and set(got.groups) == {0}


def test_wait_for_segments_names_the_causes(tmp_path: Path) -> None:
    write_segment("kvc_zero", 0, 0, 0, shm_dir=tmp_path)
    for name in ("kvc_none", "kvc_zero"):
        t0 = time.monotonic()
        with pytest.raises(seg.KvcachedNotActive) as err:
            seg.wait_for_segments(name, timeout_s=0.2, poll_s=0.05, shm_dir=tmp_path)
        assert time.monotonic() - t0 >= 0.2
        text = str(err.value)
        for cause in (name, "not importable", "vLLM version", "KVCACHED_IPC_NAME"):
            assert cause in text


class FakeNvmlError(Exception):
    pass


class FakeFunctionNotFound(FakeNvmlError):
    pass


class FakePynvml:
    """pynvml's calls the NvmlSource makes, with a v1 `used` that includes `reserved`."""

    NVMLError = FakeNvmlError
    NVMLError_FunctionNotFound = FakeFunctionNotFound
    NVMLError_NotSupported = type("NotSupported", (FakeNvmlError,), {})
    nvmlMemory_v2 = 0x2000028

    def __init__(self, v2: bool = True) -> None:
        self.v2 = v2
        self.calls: list[object] = []

    def nvmlInit(self) -> None:  # noqa: N802
        pass

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        return f"gpu{index}"

    def nvmlDeviceGetMemoryInfo(self, handle: str, version: int | None = None):  # noqa: N802
        self.calls.append(version)
        reserved, used = 615 << 20, 4 * GiB
        if version is None:
            return type("M1", (), {"total": 140 * GiB, "used": used + reserved,
                                   "free": 140 * GiB - used - reserved})
        if not self.v2:
            raise FakeFunctionNotFound("nvmlDeviceGetMemoryInfo_v2")
        assert version == self.nvmlMemory_v2
        return type("M2", (), {"total": 140 * GiB, "used": used, "reserved": reserved,
                               "free": 140 * GiB - used - reserved, "version": version})


def test_nvml_v2_used_is_what_nvidia_smi_shows_and_reserved_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakePynvml(v2=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    got = by_metric(DeviceSampler(NvmlSource(0), [], 0.2, per_instance=False).sample(1.0))
    assert got == {"device_used_bytes": 4 * GiB, "device_total_bytes": 140 * GiB,
                   "device_reserved_bytes": 615 << 20, "device_memory_info_version": 2}
    assert fake.calls == [fake.nvmlMemory_v2]  # one call per tick


def test_nvml_falls_back_to_v1_once_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakePynvml(v2=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = DeviceSampler(NvmlSource(0), [], 0.2, per_instance=False)
    with caplog.at_level(logging.WARNING, logger="kvexp.samplers.device"):
        first, second = sampler.sample(1.0), sampler.sample(2.0)
    for got in (by_metric(first), by_metric(second)):
        assert got == {"device_used_bytes": 4 * GiB + (615 << 20),
                       "device_total_bytes": 140 * GiB, "device_memory_info_version": 1}
    assert fake.calls == [fake.nvmlMemory_v2, None, None]  # v2 tried once
    assert len([r for r in caplog.records if "v2 is not supported" in r.getMessage()]) == 1


def test_nvml_errors_other_than_unsupported_are_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakePynvml()

    def lost(handle: str, version: int | None = None) -> None:
        raise FakeNvmlError("GPU is lost")

    fake.nvmlDeviceGetMemoryInfo = lost  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(FakeNvmlError, match="lost"):
        NvmlSource(0).memory()


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 3.0
# HELP vllm:num_preemptions_created Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_created gauge
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",\
enable_prefix_caching="False",engine="0",gpu_memory_utilization="0.55",\
num_cpu_blocks="None",num_gpu_blocks="1234",prefix_caching_hash_algo="builtin"} 1.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 5.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 5.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 7.5
"""


@pytest.fixture
def metrics_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = VLLM_METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_engine_metrics_sampler_scrapes_vllm_metrics(metrics_server: str) -> None:
    instances = [
        InstanceHandle("a", metrics_server),
        InstanceHandle("down", f"http://127.0.0.1:{free_port()}"),
        InstanceHandle("nometrics", metrics_server, metrics_path=None),
        InstanceHandle("wrongpath", metrics_server, metrics_path="/nope"),
    ]
    sampler = EngineMetricsSampler(instances, 1.0, timeout_s=1.0)
    try:
        samples = sampler.sample(9.0)
    finally:
        sampler.close()
    assert {s.instance for s in samples} == {"a"}
    assert all(s.source == "engine" and s.time == 9.0 for s in samples)
    assert by_metric(samples) == {
        "kv_cache_usage": 0.25,
        "num_requests_running": 5.0,
        "num_requests_waiting": 4.0,
        "num_preemptions": 3.0,
        "num_gpu_blocks": 1234.0,
        "block_size": 16.0,
    }
    assert sampler.failures == {"down": 1, "wrongpath": 1}


def test_engine_figures_fallbacks() -> None:
    old = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:num_preemptions{model_name="m"} 2\n'
    assert engine_figures(old) == {"kv_cache_usage": 0.5, "num_preemptions": 2.0}
    two = 'vllm:kv_cache_usage_perc{engine="0"} 0.2\nvllm:kv_cache_usage_perc{engine="1"} 0.4\n'
    assert engine_figures(two)["kv_cache_usage"] == pytest.approx(0.3)
    assert engine_figures("") == {}


def test_parse_prometheus_labels_and_values() -> None:
    text = (
        "# a comment\n"
        'm{a="x,y}",b="q\\"uote\\\\",c="line\\nbreak",} 1.5 1700000000000\n'
        "plain 2\n"
        "inf +Inf\n"
        "broken{a=1} 3\n"
        "\n"
    )
    got = list(parse_prometheus(text))
    assert [(s.name, s.value) for s in got] == [("m", 1.5), ("plain", 2.0), ("inf", float("inf"))]
    assert got[0].labels == {"a": "x,y}", "b": 'q"uote\\', "c": "line\nbreak"}


def write_sim_device(path: Path, instances: dict[str, dict[str, int]]) -> None:
    state = {"gpu": "h200", "total_bytes": 140 * GiB, "base_bytes": GiB,
             "reserved_bytes": 600 << 20, "instances": instances}
    path.write_text(json.dumps(state))


def test_sim_device_source(tmp_path: Path, tree: tuple[int, int, int]) -> None:
    parent = tree[0]
    path = tmp_path / "device.json"
    src = SimDeviceSource(path)
    instances = [InstanceHandle("a", "http://x", pid=parent)]
    sampler = DeviceSampler(src, instances, 0.1, "sim_device")
    assert sampler.sample(1.0) == []
    with pytest.raises(DeviceUnavailable):
        src.used_bytes()
    parts = {"context_bytes": 500 << 20, "weights_bytes": GiB, "activation_bytes": 0}
    write_sim_device(path, {"a": {"pid": parent, **parts, "kv_bytes": 2 * GiB}})
    samples = sampler.sample(2.0)
    assert all(s.source == "sim_device" for s in samples)
    held = (500 << 20) + 3 * GiB
    assert by_metric(samples, "") == {
        "device_used_bytes": GiB + held,
        "device_total_bytes": 140 * GiB,
        "device_reserved_bytes": 600 << 20,  # the simulated driver reservation, apart
    }
    assert by_metric(samples, "a") == {"process_gpu_bytes": held}


def test_build_samplers_honours_flags_and_intervals() -> None:
    dev = FakeDevice({})
    inst: list[InstanceHandle] = []

    def kinds(samplers: list) -> list[str]:
        for s in samplers:
            s.close()
        return [type(s).__name__ for s in samplers]

    got = build_samplers(SamplerConfig(), inst, dev, "nvml")
    assert kinds(got) == [
        "DeviceSampler",
        "ProcessSampler",
        "KvcachedSampler",
        "EngineMetricsSampler",
    ]
    assert [s.interval_s for s in got] == [0.2, 0.2, 0.01, 1.0]
    assert got[0].device_wide and got[0].per_instance and got[0].source == "nvml"
    assert all(s.instances is inst for s in got)

    got = build_samplers(SamplerConfig(), inst, None, "nvml")
    assert kinds(got) == ["ProcessSampler", "KvcachedSampler", "EngineMetricsSampler"]

    cfg = SamplerConfig(interval_s=0.5, device_interval_s=0.1, kvcached=False)
    got = build_samplers(cfg, inst, dev, "sim_device")
    assert kinds(got) == [
        "DeviceSampler",
        "DeviceSampler",
        "ProcessSampler",
        "EngineMetricsSampler",
    ]
    assert (got[0].device_wide, got[0].per_instance, got[0].interval_s) == (True, False, 0.1)
    assert (got[1].device_wide, got[1].per_instance, got[1].interval_s) == (False, True, 0.5)
    assert got[0].source == got[1].source == "sim_device"

    cfg = SamplerConfig(processes=False, engine_metrics=False)
    got = build_samplers(cfg, inst, dev, "nvml")
    assert kinds(got) == ["DeviceSampler", "KvcachedSampler"]
    assert not got[0].per_instance

    cfg = SamplerConfig(device=False, processes=False, kvcached=False, engine_metrics=False)
    assert build_samplers(cfg, inst, dev, "nvml") == []
