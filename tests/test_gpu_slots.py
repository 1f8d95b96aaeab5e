"""GPU slots for parallel points: distinct GPUs, waiting, release on death, validation."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kvexp.config import EngineConfig
from kvexp.sweep import gpu_slots
from kvexp.sweep.gpu_slots import GpuSlotError, claim_gpus, gpu_env, nvml_index, point_gpus


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def hold(claims: dict[str, list[int] | None], name: str, release: threading.Event,
         **kw: object) -> threading.Thread:
    """A thread that claims a slot, records it under `name` and holds it until `release`."""

    def run() -> None:
        with claim_gpus(**kw) as gpus:  # type: ignore[arg-type]
            claims[name] = gpus
            release.wait(30)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def wait_for(cond, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_parallel_claims_get_distinct_slots_and_a_third_waits(tmp_path: Path) -> None:
    kw = {"gpus_per_point": 2, "gpu_ids": [0, 1, 2, 3], "lock_dir": tmp_path, "timeout_s": 20}
    claims: dict[str, list[int] | None] = {}
    first, second, third = threading.Event(), threading.Event(), threading.Event()
    t1 = hold(claims, "a", first, **kw)
    t2 = hold(claims, "b", second, **kw)
    assert wait_for(lambda: "a" in claims and "b" in claims)
    assert sorted([claims["a"], claims["b"]]) == [[0, 1], [2, 3]]
    t3 = hold(claims, "c", third, **kw)
    time.sleep(0.8)
    assert "c" not in claims  # both slots held: the third waits
    second.set()
    t2.join(5)
    assert wait_for(lambda: "c" in claims)
    assert claims["c"] == claims["b"]  # the slot the second one gave back
    first.set()
    third.set()
    t1.join(5)
    t3.join(5)


def test_no_free_slot_in_time_names_the_holder(tmp_path: Path) -> None:
    with claim_gpus(1, [5], tmp_path, owner="outputs/x/0") as gpus:
        assert gpus == [5]
        t0 = time.monotonic()
        with pytest.raises(GpuSlotError) as err, claim_gpus(1, [5], tmp_path, timeout_s=0.5):
            pass
        assert time.monotonic() - t0 >= 0.5
    msg = str(err.value)
    assert "no free slot of 1 GPU(s) among [5] after 0.5 s" in msg
    assert f"pid {os.getpid()}" in msg and "outputs/x/0" in msg
    assert "hydra.launcher.n_jobs" in msg
    with claim_gpus(1, [5], tmp_path, timeout_s=0.5) as gpus:  # released on exit
        assert gpus == [5]


def test_a_slot_is_released_when_its_holder_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), claim_gpus(1, [0], tmp_path):
        raise RuntimeError("point failed")
    with claim_gpus(1, [0], tmp_path, timeout_s=0.5) as gpus:
        assert gpus == [0]


HOLDER = textwrap.dedent("""
    import sys, time
    from kvexp.sweep.gpu_slots import claim_gpus
    with claim_gpus(1, [0, 1], sys.argv[1], timeout_s=20) as gpus:
        print(",".join(map(str, gpus)), flush=True)
        time.sleep(120)
""")


def test_processes_get_distinct_slots_and_a_killed_one_releases_its_own(
        tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        got = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
        assert sorted(got) == ["0", "1"]
        with pytest.raises(GpuSlotError), claim_gpus(1, [0, 1], tmp_path, timeout_s=0.3):
            pass
        victim = procs[got.index("1")]
        os.kill(victim.pid, signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
        victim.wait(10)
        with claim_gpus(1, [0, 1], tmp_path, timeout_s=5) as gpus:
            assert gpus == [1]
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


@pytest.mark.parametrize(
    "per_point, ids, message",
    [
        (0, None, "engine.gpus_per_point must be >= 1, got 0"),
        (1, [], "engine.gpu_ids must list at least one GPU, or be null"),
        (1, [0, -1], "engine.gpu_ids must be >= 0, got [-1]"),
        (1, [0, 1, 1], "engine.gpu_ids lists GPU(s) [1] more than once"),
        (2, [3], "engine.gpu_ids lists 1 GPU(s), fewer than engine.gpus_per_point (2)"),
    ],
)
def test_bad_gpu_settings_are_refused_clearly(tmp_path: Path, per_point: int,
                                              ids: list[int] | None, message: str) -> None:
    with pytest.raises(GpuSlotError) as err, claim_gpus(per_point, ids, tmp_path):
        pass
    assert message in str(err.value)
    from kvexp.config import ConfigError

    with pytest.raises(ConfigError) as cerr:
        sweep_config(f"engine.gpus_per_point={per_point}",
                     f"engine.gpu_ids={'null' if ids is None else ids}".replace(" ", ""))
    assert message in str(cerr.value)


def sweep_config(*overrides: str):  # noqa: ANN201
    """The validated config of `python -m kvexp <overrides>` (composed from conf/)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import kvexp.__main__  # noqa: F401 - registers the schemas and the kvexp_uid resolver
    from kvexp.config import to_config

    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[1] / "conf"
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            return to_config(compose("config", overrides=list(overrides)))
    finally:
        GlobalHydra.instance().clear()


def test_the_gpu_settings_have_their_defaults_in_every_engine() -> None:
    for engine in ("auto", "sim", "vllm", "vllm_cpu"):
        e = sweep_config(f"engine={engine}", "allocator=static").engine
        assert (e.gpus_per_point, e.gpu_ids, e.gpu_lock_dir) == (1, None, "/tmp/kvexp-gpu-locks")
        assert e.gpu_wait_timeout_s > 0
    e = sweep_config("engine.gpus_per_point=2", "engine.gpu_ids=[4,5,6,7]").engine
    assert (e.gpus_per_point, e.gpu_ids) == (2, [4, 5, 6, 7])


def test_no_gpu_means_no_assignment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with claim_gpus(1, None, tmp_path / "locks") as gpus:
        assert gpus is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(gpu_slots, "nvml_count", lambda: 0)
    with claim_gpus(2, None, tmp_path / "locks") as gpus:
        assert gpus is None
    assert not (tmp_path / "locks").exists()  # nothing to lock, nothing written
    assert gpu_env(None) is None


def test_gpus_come_from_cuda_visible_devices_else_nvml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,-1,0")  # CUDA stops at -1
    assert gpu_slots.host_gpus() == [2, 3]
    assert gpu_slots.host_gpus([7]) == [7]  # gpu_ids win
    assert nvml_index() == 2
    with claim_gpus(2, None, tmp_path) as gpus:
        assert gpus == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(GpuSlotError, match="gpus_per_point=2, but only 1 GPU"), \
            claim_gpus(2, None, tmp_path):
        pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f6e1c2a")
    with pytest.raises(GpuSlotError, match="set engine.gpu_ids"), claim_gpus(1, None, tmp_path):
        pass
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(gpu_slots, "nvml_count", lambda: 3)
    assert gpu_slots.host_gpus() == [0, 1, 2]
    assert gpu_slots.make_slots([0, 1, 2], 2) == [[0, 1]]  # GPU 2 left over, unused


def test_slurm_jobs_have_locks_of_their_own(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with claim_gpus(1, [0], tmp_path):
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
        with claim_gpus(1, [0], tmp_path, timeout_s=0.5) as gpus:  # another job's GPU 0
            assert gpus == [0]
    assert (tmp_path / "slurm-4242" / "gpu-0.lock").exists()


def test_a_point_gets_gpus_only_with_a_cuda_engine(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    engine = EngineConfig(kind="sim", gpu_lock_dir=str(tmp_path))
    with point_gpus(engine) as gpus:
        assert gpus is None  # the sim needs no GPU: nothing claimed
    engine.vllm.device = "cpu"
    engine.kind = "vllm"
    with point_gpus(engine) as gpus:
        assert gpus is None
    engine.vllm.device = "cuda"
    engine.gpus_per_point = 2
    with point_gpus(engine, owner="p0") as gpus:
        assert gpus == [0, 1]
        env = gpu_env(gpus, base={"PATH": "/bin"})
        assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1",
                       "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        assert "p0" in (tmp_path / "gpu-1.lock").read_text()


def _claim_in_worker(lock_dir: str) -> tuple[list[int] | None, float, float, int]:
    with claim_gpus(1, [0, 1], lock_dir, timeout_s=30) as gpus:
        start = time.time()
        time.sleep(0.5)
        return gpus, start, time.time(), os.getpid()


def test_joblib_workers_running_at_once_hold_different_gpus(tmp_path: Path) -> None:
    from joblib import Parallel, delayed

    runs = Parallel(n_jobs=3)(delayed(_claim_in_worker)(str(tmp_path)) for _ in range(5))
    assert len({pid for *_, pid in runs}) > 1  # really several processes
    assert {tuple(g) for g, *_ in runs} <= {(0,), (1,)}
    for (g1, s1, e1, _), (g2, s2, e2, _) in itertools.combinations(runs, 2):
        if s1 < e2 and s2 < e1:
            assert g1 != g2  # 3 workers, 2 GPUs: never two on one GPU at once
