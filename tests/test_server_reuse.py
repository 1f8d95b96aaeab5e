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


def test_the_sweep_alternates_allocators_and_shares_within_pairs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "allocator=kvcached,static", "burst_size=1,2,3",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pids = server_pids(sweep)
    # A B B A A B: each burst size sees both allocators, which one goes first alternating
    assert [reused for _, reused in pids.values()] == [False, False, True, False, True, False]
    assert len({pid for pid, _ in pids.values()}) == 4
    res = load(sweep)
    s = res.summary.set_index("point")
    assert list(s["allocator"]) == ["kvcached", "static", "static", "kvcached", "kvcached",
                                    "static"]
    assert list(s["burst_size"]) == [1, 1, 2, 2, 3, 3]
    assert set(s["status"]) == {"ok"}
    # Memory was back to idle before every next point: the same idle footprint each time.
    for alloc in ("kvcached", "static"):
        idle = s[s["allocator"] == alloc]["idle_device_gib"]
        assert idle.max() - idle.min() < 0.01, idle
    assert s[s["allocator"] == "static"]["start_kv_held_gib"].isna().all()
    assert s[s["allocator"] == "kvcached"]["start_kv_held_gib"].notna().all()
    for p in res.points.itertuples():
        assert p.servers_kept and p.servers_idle_after_s < 30
    assert_nothing_left(tmp_path, sweep)


def test_a_shared_kvcached_server_starts_each_point_at_its_ready_held_bytes(
        tmp_path: Path) -> None:
    """kvcached keeps freed pages mapped (up to max_reserved_pages); between points the pool
    shrinks the segment limit to the ready level, lets one request apply it, and restores it."""
    sweep = tmp_path / "sweep"
    wide = ["model.num_attention_heads=16", "model.num_kv_heads=16", "model.head_dim=64",
            "model.hidden_size=1024"]  # 4 KiB of KV per token and layer: 512 tokens a page
    r = kvexp("-m", *FAST, *wide, "allocator=kvcached", "workload.waves=1",
              "workload.max_tokens=200", "workload.ignore_eos=true", "burst_size=8,1",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [reused for _, reused in server_pids(sweep).values()] == [False, True]
    res = load(sweep)
    first, second = (json.loads((sweep / p / "point.json").read_text())["start_kv_held_bytes"]
                     for p in ("0", "1"))
    page = 2 * 2**20 * OmegaConf.load(sweep / "0" / "config.yaml").model.num_layers
    held = res.memory[(res.memory["metric"] == "kv_held_bytes")]
    assert first.keys() == second.keys() and len(first) == 1
    (name,) = first
    after_load = held[(held["point"] == "0") & (held["instance"] == name)]["value"].iloc[-1]
    assert after_load > first[name] + page  # point 0 left more mapped than it started with
    for name in first:
        assert abs(second[name] - first[name]) <= page, (first, second)
    assert_nothing_left(tmp_path, sweep)


def test_the_config_decides_not_the_order_of_the_overrides(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = kvexp("-m", *FAST, "workload.waves=1", "burst_size=1,2", "allocator=kvcached,static",
              f"hydra.sweep.dir={sweep}", "report=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = load(sweep).summary.set_index("point")
    assert list(s["allocator"]) == ["kvcached", "static", "static", "kvcached"]
    assert list(s["burst_size"]) == [1, 1, 2, 2]
    assert [reused for _, reused in server_pids(sweep).values()] == [False, False, True, False]


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


def test_shared_server_points_alternate_a_b_b_a() -> None:
    from kvexp.sweep.sweeper import PlannedPoint, counterbalanced

    def pts(*keys: str | None) -> list[PlannedPoint]:
        return [PlannedPoint([f"p={i}"], "h", k) for i, k in enumerate(keys)]

    def order(points: list[PlannedPoint], repeats: list[int]) -> list[str]:
        return [f"{p.server_key}{p.overrides[0][2:]}" for p in counterbalanced(points, repeats)]

    # Hydra's order: all of A, then all of B
    assert order(pts("A", "A", "A", "B", "B", "B"), [0] * 6) == ["A0", "B3", "B4", "A1", "A2",
                                                                 "B5"]
    # three keys, uneven counts: every round reverses the last, ends share servers
    assert order(pts("A", "A", "B", "C", "C", "C"), [0] * 6) == ["A0", "B2", "C3", "C4", "A1",
                                                                 "C5"]
    # each repeat is its own block; points that never share follow their repeat's
    assert order(pts("A", None, "B", "A2", "B2"), [0, 0, 0, 1, 1]) == ["A0", "B2", "None1",
                                                                       "A23", "B24"]
