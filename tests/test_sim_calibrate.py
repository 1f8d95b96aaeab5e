"""`python -m kvexp calibrate`: the sim's step-time and memory model fitted from a run.

tests/fixtures/h200_calibration/ is cut from the H200 runs of docs/h200.md (vLLM 0.26,
kvcached 0.1.6, Qwen2.5-0.5B shape): the kvcached burst-2 and burst-12 points of the
round-1 sweep and the static point run on model runner V1 (requests whole, memory
samples thinned, server logs cut to vLLM's profile lines), and the profile line vLLM
logged for the Qwen2.5-1.5B shape in two_models_pressure.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kvexp.config import AllocatorConfig, ModelConfig, SimEngineConfig
from kvexp.engines.sim.calibrate import calibrate, load_calibration
from kvexp.engines.sim.device import SimDevice
from kvexp.engines.sim.footprint import activation_bytes, context_bytes
from kvexp.engines.sim.gpus import GiB, get_gpu
from kvexp.engines.sim.launch import calibrated
from kvexp.engines.sim.memory import ElasticPool, StaticPool
from kvexp.engines.sim.results import Instance, device_base, find_points, logged_parts

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "h200_calibration"


def _model(d: dict) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in names})


def sim_idle_gib(tmp_path: Path, sim: SimEngineConfig, model: ModelConfig, alloc: dict) -> float:
    """Device memory (as nvidia-smi) a simulated H200 holds for one idle server."""
    gpu = get_gpu("h200")
    device = SimDevice(tmp_path / f"{alloc['kind']}.json", gpu)
    act = activation_bytes(model, sim.max_batch, sim.sampler_logit_copies)
    elastic = alloc["kind"] == "kvcached"
    device.register("a", os.getpid(), context_bytes(sim, gpu, elastic), model.weight_bytes, act)
    names = {f.name for f in dataclasses.fields(AllocatorConfig)}
    allocator = AllocatorConfig(**{k: v for k, v in alloc.items() if k in names})
    args = (device, "a", model, allocator, sim.block_size, act)
    pool = ElasticPool(*args, ipc_name="kvexp-cal", shm_dir=tmp_path) if elastic \
        else StaticPool(*args)
    snap = device.snapshot()
    pool.close()
    assert snap is not None
    return snap.used_bytes / GiB


def test_calibration_on_h200_data_reproduces_what_was_measured(tmp_path: Path) -> None:
    cal = calibrate([FIXTURE])
    sim = dataclasses.replace(SimEngineConfig(), **cal["sim"])
    points = find_points(FIXTURE)
    assert len(points) == 3 and cal["fit"]["left_out_v2_runner"] == []
    # The step line passes through each point's ITL p50 as kvexp's summary computed it
    for p in points:
        n = p.meta["choices"]["burst_size"] if "burst_size" in p.meta["choices"] else 6
        step_ms = sim.step_overhead_ms + sim.step_per_seq_ms * n
        assert step_ms == pytest.approx(p.summary["itl_p50_s"] * 1000, rel=0.12), p.path.name
    # A simulated server with the fitted constants holds the idle memory each point read
    for p in points:
        inst = p.instances[0]
        base, _ = device_base(p)
        measured = (p.summary["idle_device_gib"] * GiB - base) / GiB
        assert sim_idle_gib(tmp_path, sim, _model(inst.model), inst.allocator) == \
            pytest.approx(measured, rel=0.01), p.path.name
    # Out of sample: the activation peak vLLM logged for the 1.5B shape
    large = yaml.safe_load((ROOT / "conf/model/qwen2.5-1.5b-instruct.yaml").read_text())
    log = (FIXTURE / "qwen2.5-1.5b-profile.log").read_text()
    parts = logged_parts(Instance("large", large, {}, 256, log))
    assert parts is not None
    predicted = activation_bytes(_model(large), 256, sim.sampler_logit_copies)
    assert predicted == pytest.approx(parts[1], rel=0.05)


def test_bad_calibration_files_are_refused_by_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sim:\n  step_overhead_ms: 9.0\n  warp_factor: 2\n")
    with pytest.raises(ValueError, match="warp_factor"):
        load_calibration(bad)
    with pytest.raises(ValueError, match="no file"):
        calibrated(SimEngineConfig(calibration=str(tmp_path / "missing.yaml")))
    good = tmp_path / "good.yaml"
    good.write_text("sim:\n  step_overhead_ms: 9.0\n  step_per_seq_ms: 0.5\n")
    sim = calibrated(SimEngineConfig(calibration=str(good)))
    assert (sim.step_overhead_ms, sim.step_per_seq_ms) == (9.0, 0.5)


def test_results_without_a_profile_line_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no ok kvexp point"):
        calibrate([tmp_path])


# The sim settings a sim run is made with; the calibration of its results must find them
TRUE = {"step_overhead_ms": 20.0, "step_per_seq_ms": 2.0, "sampler_logit_copies": 9.0,
        "context_mb": 700.0, "kvcached_runtime_mb": 320.0}


@pytest.mark.timeout(400)
def test_calibrating_a_sim_run_recovers_its_settings(tmp_path: Path) -> None:
    truth = tmp_path / "truth.yaml"
    truth.write_text(yaml.safe_dump({"sim": TRUE}))
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "kvexp", "-m", "engine=sim", "allocator=kvcached,static",
            "burst_size=2,10", f"engine.sim.calibration={truth}", "name=truth",
            f"hydra.sweep.dir={tmp_path / 'run'}", "workload.waves=2", "workload.idle_s=0.5",
            "workload.max_tokens=60", "workload.ignore_eos=true", "workload.lead_in_s=1",
            "workload.tail_s=1"]
    run = subprocess.run(args, cwd=tmp_path, env=env, text=True, capture_output=True,
                         timeout=380)
    assert run.returncode == 0, run.stderr[-3000:]
    fit = calibrate([tmp_path / "run"])["sim"]
    # A sim server wakes late by the host's timer lateness (1-2 ms on a busy 2-core host),
    # which the gaps carry as overhead
    assert TRUE["step_overhead_ms"] - 0.5 <= fit["step_overhead_ms"] <= TRUE["step_overhead_ms"] + 3
    assert fit["step_per_seq_ms"] == pytest.approx(TRUE["step_per_seq_ms"], rel=0.15)
    for key in ("sampler_logit_copies", "context_mb", "kvcached_runtime_mb"):
        assert fit[key] == pytest.approx(TRUE[key], rel=0.01), key


@pytest.mark.timeout(200)
def test_capacity_runs_calibrate_the_step_alone(tmp_path: Path) -> None:
    """A capacity point's N instances come from its mix, their logs from the sweep's shared
    servers; `--fit step` fits the step from them, while the full fit refuses, naming the
    single-instance static point the memory fit needs."""
    truth = tmp_path / "truth.yaml"
    truth.write_text(yaml.safe_dump({"sim": {k: TRUE[k] for k in
                                             ("step_overhead_ms", "step_per_seq_ms")}}))
    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "kvexp", "-m", "experiment=capacity", "engine=sim",
            "capacity.allocators=[static]", "capacity.n_min=2", "capacity.n_max=2",
            "workload.duration_s=8", "workload.max_tokens=64", "workload.lead_in_s=0.5",
            "workload.tail_s=0.5", "mix.rate=3", "capacity.min_requests=10",
            "capacity.max_send_lag_ms=5000", "slo.ttft_ms=20000", "slo.tpot_ms=5000",
            "sampler.interval_s=0.5", f"engine.sim.calibration={truth}",
            f"hydra.sweep.dir={tmp_path / 'run'}"]
    run = subprocess.run(args, cwd=tmp_path, env=env, text=True, capture_output=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    (point,) = find_points(tmp_path / "run")
    assert [(i.name, i.allocator["gpu_memory_utilization"]) for i in point.instances] == [
        ("m0", 0.45), ("m1", 0.45)]  # 0.9 / N each
    assert all("weights" in i.log for i in point.instances)  # the sim's start line
    with pytest.raises(ValueError, match="single-instance static point"):
        calibrate([tmp_path / "run"])
    cal = calibrate([tmp_path / "run"], parts=("step",))
    assert set(cal["sim"]) == {"step_overhead_ms", "step_per_seq_ms"}
    assert cal["fit"]["instances_per_point"] == [2]
    # Two servers share the simulated GPU: a step's gap also holds its wait for the other's
    # GPU part (at most that part, ~6 ms for this 14B shape on the H200), which the fit,
    # made per server, takes as overhead; and the host's timer lateness (<= 3 ms, above).
    gpu_part_ms = _model(point.instances[0].model).weight_bytes \
        / get_gpu("h200").mem_bandwidth_bytes_s * 1000
    fit = cal["sim"]
    assert TRUE["step_overhead_ms"] - 0.5 <= fit["step_overhead_ms"] \
        <= TRUE["step_overhead_ms"] + gpu_part_ms + 3
    assert fit["step_per_seq_ms"] == pytest.approx(TRUE["step_per_seq_ms"], rel=0.15)
    with pytest.raises(ValueError, match="--fit"):
        calibrate([tmp_path / "run"], parts=("speed",))
