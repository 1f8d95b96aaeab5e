"""The vLLM launch spec: argv and environment for static, kvcached and CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kvexp.config import AllocatorConfig, EngineConfig, ModelConfig, ResolvedInstance
from kvexp.engines.vllm.launch import build_vllm_launch, cuda_available, vllm_available
from tests.conftest import model_from_conf

KVCACHED_VARS = {
    "KVCACHED_PAGE_SIZE_MB",
    "KVCACHED_CONTIGUOUS_LAYOUT",
    "KVCACHED_GPU_UTILIZATION",
    "KVCACHED_PAGE_PREALLOC_ENABLED",
    "KVCACHED_MIN_RESERVED_PAGES",
    "KVCACHED_MAX_RESERVED_PAGES",
    "KVCACHED_MAX_CACHED_TOKENS",
    "KVCACHED_LOG_LEVEL",
}


def model(**kw: object) -> ModelConfig:
    # vocab 1024: these tests only need the folder to exist
    return model_from_conf("qwen2.5-0.5b-instruct", vocab_size=1024, **kw)


def launch(tmp_path: Path, kind: str = "static", device: str = "cuda", **alloc: object):
    engine = EngineConfig(kind="vllm")
    engine.vllm.device = device
    inst = ResolvedInstance("a", model(), AllocatorConfig(kind=kind, **alloc))
    return build_vllm_launch(inst, engine, tmp_path, 8123, "kvx_a" if kind == "kvcached" else None)


def opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_static_gpu(tmp_path: Path) -> None:
    spec = launch(tmp_path, gpu_memory_utilization=0.55)
    a = spec.argv
    assert a[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert opt(a, "--model") == str(tmp_path / "qwen2.5-0.5b-instruct")
    assert (tmp_path / "qwen2.5-0.5b-instruct" / "config.json").is_file()
    assert opt(a, "--served-model-name") == "Qwen/Qwen2.5-0.5B-Instruct" == spec.served_model
    assert opt(a, "--host") == "127.0.0.1" and opt(a, "--port") == "8123"
    assert opt(a, "--max-model-len") == "2048"
    assert opt(a, "--dtype") == "bfloat16"
    assert opt(a, "--load-format") == "dummy"
    assert opt(a, "--gpu-memory-utilization") == "0.55"
    assert "--no-enable-prefix-caching" in a and "--enforce-eager" in a
    assert spec.env == {"HF_HUB_OFFLINE": "1"}
    assert spec.ipc_name is None
    assert (spec.health_path, spec.metrics_path) == ("/health", "/metrics")


def test_kvcached_gpu(tmp_path: Path) -> None:
    spec = launch(tmp_path, kind="kvcached", gpu_memory_utilization=0.9, page_size_mb=4)
    assert opt(spec.argv, "--gpu-memory-utilization") == "0.9"
    env = spec.env
    assert env["ENABLE_KVCACHED"] == "true"
    assert env["KVCACHED_AUTOPATCH"] == "1"
    assert env["KVCACHED_IPC_NAME"] == "kvx_a" == spec.ipc_name
    assert env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert KVCACHED_VARS <= env.keys()
    assert env["KVCACHED_PAGE_SIZE_MB"] == "4"
    assert env["KVCACHED_CONTIGUOUS_LAYOUT"] == "true"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_kvcached_ipc_name_defaults_per_instance(tmp_path: Path) -> None:
    engine = EngineConfig(kind="vllm")
    inst = ResolvedInstance("inst-1", model(), AllocatorConfig(kind="kvcached"))
    spec = build_vllm_launch(inst, engine, tmp_path, 9001, None)
    assert spec.ipc_name == spec.env["KVCACHED_IPC_NAME"] == "kvcached_inst-1_9001"


def test_cpu(tmp_path: Path) -> None:
    engine = EngineConfig(kind="vllm")
    engine.vllm.device = "cpu"
    engine.vllm.cpu_kvcache_space_gb = 2.5
    engine.vllm.python = "/opt/vllm/bin/python"
    inst = ResolvedInstance("a", model(), AllocatorConfig(kind="static"))
    spec = build_vllm_launch(inst, engine, tmp_path, 8000, None)
    assert spec.argv[0] == "/opt/vllm/bin/python"
    assert "--gpu-memory-utilization" not in spec.argv
    assert spec.env == {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
    engine.vllm.cpu_kvcache_space_gb = 0.25
    spec = build_vllm_launch(inst, engine, tmp_path, 8000, None)
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_kvcached_on_cpu_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kvcached has no CPU mode"):
        launch(tmp_path, kind="kvcached", device="cpu")


def test_bad_kinds_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allocator.kind"):
        launch(tmp_path, kind="paged")
    with pytest.raises(ValueError, match="engine.vllm.device"):
        launch(tmp_path, device="tpu")


def test_options_extra_args_and_env(tmp_path: Path) -> None:
    engine = EngineConfig(kind="vllm", host="0.0.0.0")
    engine.vllm.enforce_eager = False
    engine.vllm.enable_prefix_caching = True
    engine.vllm.load_format = "auto"
    engine.vllm.extra_args = ["--max-num-seqs", "64"]
    engine.vllm.extra_env = {"VLLM_USE_FLASHINFER_SAMPLER": "0", "KVCACHED_LOG_LEVEL": "DEBUG"}
    inst = ResolvedInstance("a", model(), AllocatorConfig(kind="kvcached"))
    spec = build_vllm_launch(inst, engine, tmp_path, 8000, "x")
    a = spec.argv
    assert "--enforce-eager" not in a and "--no-enable-prefix-caching" not in a
    assert opt(a, "--load-format") == "auto"
    assert a[-2:] == ["--max-num-seqs", "64"]
    assert spec.host == "0.0.0.0"
    assert spec.env["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    assert spec.env["KVCACHED_LOG_LEVEL"] == "DEBUG"  # extra_env wins


def test_hub_and_local_models(tmp_path: Path) -> None:
    engine = EngineConfig(kind="vllm")
    alloc = AllocatorConfig(kind="static")
    hub = build_vllm_launch(
        ResolvedInstance("a", model(source="hub"), alloc), engine, tmp_path, 8000, None
    )
    assert opt(hub.argv, "--model") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "--load-format" not in hub.argv
    assert "HF_HUB_OFFLINE" not in hub.env
    local_dir = tmp_path / "real"
    local_dir.mkdir()
    (local_dir / "config.json").write_text("{}")
    m = model(source="local", path=str(local_dir), hub_id=None)
    local = build_vllm_launch(ResolvedInstance("a", m, alloc), engine, tmp_path, 8000, None)
    assert opt(local.argv, "--model") == str(local_dir)
    assert opt(local.argv, "--served-model-name") == "qwen2.5-0.5b-instruct"
    assert "--load-format" not in local.argv
    assert local.env["HF_HUB_OFFLINE"] == "1"


def test_availability_probes() -> None:
    ok, reason = vllm_available("/nonexistent/python")
    assert not ok and "not found" in reason
    ok, reason = vllm_available(sys.executable)
    assert isinstance(ok, bool) and reason
    ok, reason = cuda_available()
    assert isinstance(ok, bool) and reason


def test_a_relative_server_python_is_taken_from_the_project_root(tmp_path, monkeypatch) -> None:
    from kvexp.engines.vllm.launch import PROJECT_ROOT, interpreter

    monkeypatch.chdir(tmp_path)  # not the project's folder
    assert (PROJECT_ROOT / "pyproject.toml").exists()
    assert interpreter(".venv-vllm/bin/python") == str(PROJECT_ROOT / ".venv-vllm/bin/python")
    assert interpreter("/opt/py/bin/python") == "/opt/py/bin/python"
    assert interpreter(None) == sys.executable
