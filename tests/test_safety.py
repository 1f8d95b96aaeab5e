"""Runs that would harm the machine or their results are refused before anything starts."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from kvexp import safety
from tests.test_runner import FAST, kvexp


@pytest.mark.parametrize("multirun", [True, False])
def test_a_name_that_leaves_outputs_is_refused(tmp_path: Path, multirun: bool) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    r = kvexp(*(["-m"] if multirun else []), *FAST, "name=../../escaped", cwd=work)
    assert r.returncode != 0
    assert "name must be one folder name" in r.stderr
    assert not (tmp_path / "escaped").exists() and not (work / "outputs").exists()


def test_servers_stay_on_loopback_unless_allowed(tmp_path: Path) -> None:
    r = kvexp("-m", *FAST, "engine.host=0.0.0.0", cwd=tmp_path)
    assert r.returncode == 2
    assert "engine.host=0.0.0.0 listens beyond this machine" in r.stderr
    assert "engine.allow_remote=true" in r.stderr
    assert safety.is_loopback("127.0.0.2") and safety.is_loopback("::1")
    assert not safety.is_loopback("0.0.0.0") and not safety.is_loopback("10.1.2.3")


def test_a_burst_beyond_the_open_file_limit_is_refused(tmp_path: Path) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))

    env = {**os.environ, "KVEXP_SHM_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "kvexp", "-m", *FAST, "burst_size=2,600"],
                       cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120,
                       preexec_fn=low_limit)
    assert r.returncode == 2
    assert "burst_size: 600 requests at once need about 728 open files" in r.stderr
    assert "limit of 400" in r.stderr
    assert not (tmp_path / "outputs").exists()  # the whole sweep refused


def test_the_failed_share_rule() -> None:
    assert safety.too_many_failed(10, 5, 0.5) is None
    assert safety.too_many_failed(10, 6, 0.5).startswith("6 of 10 requests failed")
    assert safety.too_many_failed(4, 1, 0.0) is not None
    assert safety.too_many_failed(0, 0, 0.0) is None
