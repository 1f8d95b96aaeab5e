"""Every config option composes and validates; bad values are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose

import kvexp.__main__  # noqa: F401 - registers the schemas and the kvexp_uid resolver
from kvexp.config import ConfigError, resolve_instances, to_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("hydra_conf")  # tests/conftest.py


def cfg_for(*overrides: str):
    return to_config(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize("group", ["model", "allocator", "workload", "sampler", "slo",
                                   "engine"])
def test_every_option_composes_and_validates(group: str) -> None:
    assert options(group), f"conf/{group} is empty"
    for option in options(group):
        extra = {"vllm_cpu": ["allocator=static"],  # what these options cannot do without
                 "external": ["engine.options.urls=[http://127.0.0.1:8000]"]}.get(option, [])
        cfg = cfg_for(f"{group}={option}", *extra)
        assert cfg is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    cfg = cfg_for(f"experiment={experiment}")
    assert cfg.name == experiment
    assert resolve_instances(cfg)


def test_defaults_are_the_tutorials() -> None:
    cfg = cfg_for()
    assert cfg.model.hub_id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.model.max_model_len == 2048
    assert cfg.model.kv_bytes_per_token == 12 * 1024  # 2 x 24 layers x 2 heads x 64 x 2 B
    w = cfg.workload
    assert (w.kind, w.waves, w.burst_size, w.idle_s, w.max_tokens, w.temperature) == (
        "bursty", 3, 6, 6.0, 180, 0.7)
    assert len(w.prompts) == 8
    assert cfg.sampler.interval_s == 0.2
    assert cfg.engine.kind == "auto"
    assert cfg_for("allocator=static").allocator.gpu_memory_utilization == 0.55


def test_burst_size_is_top_level() -> None:
    assert cfg_for("burst_size=12").workload.burst_size == 12


def test_kvcached_knobs_have_engine_defaults() -> None:
    env = cfg_for("allocator=kvcached").allocator.kvcached_env()
    assert env == {
        "KVCACHED_PAGE_SIZE_MB": "2",
        "KVCACHED_CONTIGUOUS_LAYOUT": "true",
        "KVCACHED_GPU_UTILIZATION": "0.95",
        "KVCACHED_PAGE_PREALLOC_ENABLED": "true",
        "KVCACHED_MIN_RESERVED_PAGES": "5",
        "KVCACHED_MAX_RESERVED_PAGES": "10",
        "KVCACHED_MAX_CACHED_TOKENS": "16000",
        "KVCACHED_LOG_LEVEL": "INFO",
    }


def test_model_shapes_match_the_hub_models() -> None:
    small = cfg_for("model=qwen2.5-0.5b-instruct").model
    big = cfg_for("model=qwen2.5-1.5b-instruct").model
    assert 0.45e9 < small.num_params < 0.55e9  # Qwen2.5-0.5B: 494M parameters
    assert 1.45e9 < big.num_params < 1.6e9  # Qwen2.5-1.5B: 1.54B parameters
    assert big.kv_bytes_per_token == 2 * 28 * 2 * 128 * 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("burst_size=0", "burst_size must be >= 1"),
        ("allocator.gpu_memory_utilization=1.5", "gpu_memory_utilization must be in (0, 1]"),
        ("allocator.page_size_mb=3", "page_size_mb must be a multiple of 2"),
        ("allocator.min_reserved_pages=20", "min_reserved_pages"),
        ("sampler.interval_s=0", "interval_s must be >= 0.01"),
        ("engine.port=80", "engine.port must be in 1024..65535"),
        ("engine.kind=tpu", "engine.kind must be one of"),
        ("engine.sim.gpu=b300", "engine.sim.gpu"),
        ("model.max_model_len=100000", "exceeds the model's max_position_embeddings"),
        ("model.source=local", "needs model.path"),
        ("model.source=local model.path=/no/such/model", "is not a model folder"),
        ("repeats=0", "repeats must be >= 1"),
    ],
)
def test_bad_values_are_refused_clearly(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid config") as err:
        cfg_for(*override.split())
    assert message in str(err.value)


def test_wrong_types_are_refused_by_the_schema() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="burst_size=many"):
        cfg_for("burst_size=many")


def test_kvcached_on_cpu_vllm_is_refused() -> None:
    with pytest.raises(ConfigError, match="kvcached has no CPU mode"):
        cfg_for("engine=vllm_cpu", "allocator=kvcached")


def test_two_models_get_their_own_settings() -> None:
    cfg = cfg_for("experiment=two_models", "allocator=static")
    insts = {i.name: i for i in resolve_instances(cfg)}
    assert set(insts) == {"small", "large"}
    assert insts["small"].model.name == "qwen2.5-0.5b-instruct"
    assert insts["large"].model.name == "qwen2.5-1.5b-instruct"
    assert insts["small"].allocator.gpu_memory_utilization == 0.3
    assert insts["large"].allocator.gpu_memory_utilization == 0.4
    assert insts["small"].allocator.kind == "static"


def test_static_split_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ConfigError, match="static split cannot fit"):
        cfg_for("experiment=two_models", "allocator=static",
                "instances.large.allocator.gpu_memory_utilization=0.8")


def test_kvcached_instances_may_overcommit_their_virtual_capacity() -> None:
    cfg = cfg_for("experiment=two_models", "allocator=kvcached",
                  "instances.large.allocator.gpu_memory_utilization=0.8")
    assert len(resolve_instances(cfg)) == 2


def test_unknown_instance_allocator_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        cfg_for("experiment=two_models", "+instances.small.allocator.pool_size=3")


def test_ports_follow_the_first_one() -> None:
    cfg = cfg_for("experiment=two_models", "engine.port=9100")
    assert [i.port for i in resolve_instances(cfg)] == [9100, 9101]


def test_cfg_job_prints_the_composed_config_from_any_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).parent / "kvexp"  # the console script of `pip install -e .`
    for argv in ([sys.executable, "-m", "kvexp"], [str(script)]):
        r = subprocess.run([*argv, "--cfg", "job", "experiment=two_models"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "qwen2.5-1.5b-instruct" in r.stdout and "kind: alternating" in r.stdout


def test_an_instance_can_have_workload_figures_of_its_own() -> None:
    cfg = cfg_for("experiment=two_models", "+instances.large.workload.burst_size=8")
    insts = {i.name: i for i in resolve_instances(cfg)}
    assert insts["large"].workload.burst_size == 8
    assert insts["small"].workload is None  # the experiment's workload
    with pytest.raises(ConfigError, match="burst_size must be >= 1"):
        cfg_for("experiment=two_models", "+instances.large.workload.burst_size=0")
    with pytest.raises(ConfigError, match="the schedule kind is the experiment's"):
        cfg_for("experiment=two_models", "+instances.large.workload.kind=poisson")
    with pytest.raises(ConfigError, match="unknown keys"):
        cfg_for("experiment=two_models", "+instances.large.workload.speed=3")
