"""Points that differ only in their workload share servers; everything else gets fresh ones."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kvexp.config import to_config
from kvexp.results import load
from kvexp.sweep.server_pool import server_key
from tests.test_faults import assert_nothing_left
from tests.test_runner import FAST, ROOT, kvexp

pytestmark = pytest.mark.slow


def server_pids(sweep: Path) -> dict[str, tuple[int, bool]]:
    """Each point's server pid (from attach.json) and whether the point reused it."""
    out = {}
    for d in sorted(sweep.iterdir()):
        if (d / "attach.json").exists():
            att = json.loads((d / "attach.json").read_text())
            out[d.name] = (att["servers"][0]["pid"], att["reused"])
    return out


def test_the_sweep_starts_one_server_per_allocator(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "allocator=kvcached,static", "burst_size=1,2,3",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pids = server_pids(sweep)
    assert [reused for _, reused in pids.values()] == [False, True, True, False, True, True]
    assert len({pid for pid, _ in pids.values()}) == 2
    res = load(sweep)
    s = res.summary.set_index("point")
    assert list(s["allocator"]) == ["kvcached"] * 3 + ["static"] * 3
    assert list(s["burst_size"]) == [1, 2, 3] * 2
    assert set(s["status"]) == {"ok"}
    # Memory was back to idle before every next point: the same idle footprint each time.
    for alloc in ("kvcached", "static"):
        idle = s[s["allocator"] == alloc]["idle_device_gib"]
        assert idle.max() - idle.min() < 0.01, idle
    for p in res.points.itertuples():
        assert p.servers_kept and p.servers_idle_after_s < 30
    assert_nothing_left(tmp_path, sweep)


def test_the_config_decides_not_the_order_of_the_overrides(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=1,2", "allocator=kvcached,static",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = load(sweep).summary.set_index("point")
    assert list(s["allocator"]) == ["kvcached", "kvcached", "static", "static"]
    assert len({pid for pid, _ in server_pids(sweep).values()}) == 2


def test_repeats_and_reuse_servers_false_get_fresh_servers(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=1,2", "repeats=2",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [reused for _, reused in server_pids(sweep).values()] == [False, True] * 2

    iso = tmp_path / "isolated"
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=1,2", "reuse_servers=false",
              f"hydra.sweep.dir={iso}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not server_pids(iso)  # every point started (and stopped) its own
    ports = {json.loads((iso / p / "point.json").read_text())["servers"][0]["port"]
             for p in ("0", "1")}
    assert len(ports) == 2
    assert_nothing_left(tmp_path, iso)


def test_a_shared_server_that_dies_is_replaced_for_the_next_point(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=3", "workload.max_tokens=64", "burst_size=1,2",
              "engine.sim.fault=kill", "engine.sim.fault_after_s=0.5",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 1
    s = load(sweep).summary.set_index("point")
    assert all("killed by SIGKILL" in e for e in s["error"])
    pids = server_pids(sweep)
    assert pids["0"][0] != pids["1"][0] and not pids["1"][1]
    assert_nothing_left(tmp_path, sweep)


def _conf(*overrides: str):  # noqa: ANN202
    from hydra import compose, initialize_config_dir

    from kvexp.config import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    return to_config(cfg)


def test_server_key_ignores_the_workload_and_nothing_else() -> None:
    base = _conf("allocator=kvcached")
    assert server_key(base) == server_key(_conf("allocator=kvcached", "burst_size=12",
                                                "workload=poisson", "sampler=fast"))
    two = _conf("experiment=two_models")
    assert server_key(two) == server_key(_conf("experiment=two_models", "slo.ttft_ms=500",
                                               "+instances.small.slo.tpot_ms=50"))
    for other in (["allocator=static"], ["model=tiny"], ["repeat=1"], ["seed=3"],
                  ["allocator.gpu_memory_utilization=0.3"], ["engine.vllm.extra_args=[-x]"]):
        assert server_key(_conf("allocator=kvcached", *other)) != server_key(base), other
    assert server_key(replace(base, reuse_servers=False)) is None
    cached = _conf("engine=vllm", "engine.vllm.enable_prefix_caching=true")
    assert server_key(cached) is None  # a warm prefix cache would change the next point


def test_a_kvcached_server_is_idle_when_its_kv_is_back_to_the_ready_level(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the H200, vLLM's KV usage figure stayed above 0 after a kvcached point's requests
    had finished, while the segment's used bytes were back at their level at ready."""
    import httpx

    from kvexp import kvcached_segment
    from kvexp.engines.base import LaunchSpec
    from kvexp.engines.servers import Server
    from kvexp.sweep.server_pool import is_idle

    monkeypatch.setattr(kvcached_segment, "SHM_DIR", tmp_path)
    spec = LaunchSpec("a", ["true"], {}, "127.0.0.1", 1, "m", ipc_name="kvc_a",
                      metrics_path=None)
    server, mib = Server(spec, tmp_path / "log"), 2**20
    with httpx.Client() as client:
        kvcached_segment.write_segment("kvc_a", 1000 * mib, 48 * mib, 240 * mib)
        assert is_idle(server, 48 * mib, client)
        kvcached_segment.write_segment("kvc_a", 1000 * mib, 96 * mib, 240 * mib)
        assert not is_idle(server, 48 * mib, client)  # a request's pages still mapped
        kvcached_segment.remove_segment("kvc_a")
        assert not is_idle(server, 48 * mib, client)  # no segment: not known to be idle
