"""N sim engines on one simulated H200, a burst to each at once (simulated, not a GPU).

    python benchmarks/sim_sharing.py --calibration docs/calibration/h200.yaml --servers 1 6 12

Each engine gets `--burst` requests of `--input` prompt tokens generating exactly
`--output` tokens; prints the time until every request of every engine has finished,
with the GPU shared through the device's step board and without it (share_gpu=false).
The H200 measured 8.0 s (6 servers) and 7.5 s (12) for 32 x (512 in, 256 out).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import yaml

from kvexp.config import AllocatorConfig, ModelConfig, SimEngineConfig
from kvexp.engines.sim.calibrate import load_calibration
from kvexp.engines.sim.device import SimDevice
from kvexp.engines.sim.engine import SimEngine
from kvexp.engines.sim.footprint import activation_bytes, context_bytes
from kvexp.engines.sim.gpus import get_gpu
from kvexp.engines.sim.memory import ElasticPool
from kvexp.engines.sim.sharing import StepBoard

ROOT = Path(__file__).resolve().parents[1]


async def burst(n: int, sim: SimEngineConfig, model: ModelConfig, args: argparse.Namespace,
                home: Path) -> float:
    gpu = get_gpu(sim.gpu)
    device = SimDevice(home / "dev.json", gpu)
    alloc = AllocatorConfig(kind="kvcached", gpu_memory_utilization=0.9 / n)
    engines = []
    for i in range(n):
        act = activation_bytes(model, sim.max_batch, sim.sampler_logit_copies)
        device.register(f"s{i}", os.getpid(), context_bytes(sim, gpu, True), model.weight_bytes,
                        act)
        pool = ElasticPool(device, f"s{i}", model, alloc, sim.block_size, act,
                           ipc_name=f"kvexp-bench-{i}", shm_dir=home)
        board = StepBoard(home / "dev.json") if sim.share_gpu else None
        engines.append(SimEngine(model, sim, gpu, pool, board=board))
    t0 = time.perf_counter()
    for e in engines:
        e.start()
    seqs = [e.submit(args.input, args.output, ignore_eos=True) for e in engines
            for _ in range(args.burst)]
    for s in seqs:
        while await s.events.get() is not None:
            pass
    wall = time.perf_counter() - t0
    for e in engines:
        await e.stop()
        e.pool.close()
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calibration", type=Path)
    p.add_argument("--servers", type=int, nargs="+", default=[1, 6, 12])
    p.add_argument("--burst", type=int, default=32)
    p.add_argument("--input", type=int, default=512)
    p.add_argument("--output", type=int, default=256)
    args = p.parse_args()
    sim = SimEngineConfig()
    if args.calibration:
        sim = dataclasses.replace(sim, **load_calibration(args.calibration))
    raw = yaml.safe_load((ROOT / "conf/model/qwen2.5-0.5b-instruct.yaml").read_text())
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    model = ModelConfig(**{k: v for k, v in raw.items() if k in names})
    for n in args.servers:
        for share in (True, False):
            with tempfile.TemporaryDirectory() as home:
                s = dataclasses.replace(sim, share_gpu=share)
                wall = asyncio.run(burst(n, s, model, args, Path(home)))
            print(f"servers {n:3d}  share_gpu {str(share):5s}  all {n * args.burst} requests "
                  f"done in {wall:.2f} s (simulated)")


if __name__ == "__main__":
    main()
