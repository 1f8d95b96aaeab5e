"""Which inherited variables a point records of its servers' environment: the prefixes each
engine package declares (ENV_PREFIXES), so a new engine adds its own without editing the
runner."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvexp import engines
from kvexp.point import runner


def test_every_engine_declares_the_prefixes_its_servers_read() -> None:
    for kind in engines.kinds():
        prefixes = engines.get(kind).ENV_PREFIXES
        assert isinstance(prefixes, tuple), kind
        assert all(p and p == p.upper() for p in prefixes), (kind, prefixes)
    assert "VLLM_" in engines.get("vllm").ENV_PREFIXES
    assert "KVEXP_" in engines.get("sim").ENV_PREFIXES


def test_env_prefixes_joins_every_engines_own_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"a": SimpleNamespace(ENV_PREFIXES=("X_", "Y_")),
            "b": SimpleNamespace(ENV_PREFIXES=()),
            "c": SimpleNamespace(ENV_PREFIXES=("Y_", "Z_"))}
    monkeypatch.setattr(engines, "kinds", lambda: sorted(fake))
    monkeypatch.setattr(engines, "get", fake.__getitem__)
    assert engines.env_prefixes() == ("X_", "Y_", "Z_")


def test_a_point_records_the_variables_its_engines_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.ENV_PREFIXES == engines.env_prefixes()
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    monkeypatch.setenv("KVCACHED_LOG_LEVEL", "INFO")
    monkeypatch.setenv("KVEXP_SHM_DIR", "/tmp/shm")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("UNRELATED_SETTING", "1")
    env = runner.inherited_env()
    assert env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert env["KVCACHED_LOG_LEVEL"] == "INFO"
    assert env["KVEXP_SHM_DIR"] == "/tmp/shm"
    assert env["HF_TOKEN"] == runner.REDACTED
    assert "UNRELATED_SETTING" not in env
