"""kvexp's driver against `vllm bench serve` on one real server, A B A B: latency medians.

Both clients send the same kind of load to the same server, taking turns (kvexp, vLLM,
kvexp, vLLM, ...), each as its own process: Poisson arrivals at `--rate`, `--num`
requests of `--input-len` random prompt tokens generating exactly `--output-len` tokens
(`ignore_eos`), completions API. Per run it prints the medians of TTFT, ITL (over every
gap), TPOT and E2E, then each pair's kvexp/vLLM ratio and the median ratio over pairs.

    # against a server already running (e.g. on a GPU host)
    python benchmarks/driver_vs_vllm.py --url http://127.0.0.1:8000 --model NAME \\
        --tokenizer MODEL_DIR --vllm "python3 -m vllm.entrypoints.cli.main"
    # here: starts the CPU vLLM of .venv-vllm on the `tiny` model shape first
    .venv/bin/python benchmarks/driver_vs_vllm.py --cpu [--vllm-python PATH/bin/python]

kvexp's side is `run_workload` with the `poisson` schedule (what a sweep point runs);
vLLM's side is `vllm bench serve --dataset-name random --burstiness 1 --save-detailed`.
Definitions compared (README, "Latency definitions"): TTFT = sent -> first chunk with choices;
ITL = gaps between chunks with choices; E2E = sent -> last chunk with choices;
TPOT = (E2E - TTFT) / (output tokens - 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METRICS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_s")


def kvexp_client(url: str, model: str, out: Path, args: argparse.Namespace) -> None:
    """Run kvexp's driver once (in this process) and write per-request timings as JSON."""
    sys.path.insert(0, str(HERE))
    from kvexp_client import schedule  # noqa: PLC0415  (benchmarks/ is not a package)

    from kvexp.clock import Clock
    from kvexp.results.records import InstanceHandle
    from kvexp.workloads.driver import run_workload

    specs = schedule(args.rate, args.num, "poisson", args.input_len, args.output_len)
    if args.vocab:  # random prompt ids within the served model's vocabulary
        import numpy as np

        rng = np.random.default_rng(args.seed)
        specs = [dataclasses.replace(s, prompt_token_ids=[
            int(t) for t in rng.integers(10, args.vocab, args.input_len)]) for s in specs]
    rows = run_workload(specs, {"a": InstanceHandle("a", url, served_model=model)}, Clock())
    out.write_text(json.dumps([
        {"ok": r.ok, "ttft": r.ttft_s, "itl": list(r.itl_s), "tpot": r.tpot_s, "e2e": r.e2e_s,
         "tokens": r.completion_tokens, "error": r.error} for r in rows
    ]))


def summarize_kvexp(path: Path) -> dict[str, float]:
    rows = [r for r in json.loads(path.read_text()) if r["ok"]]
    return {
        "ttft_ms": 1e3 * median(r["ttft"] for r in rows),
        "itl_ms": 1e3 * median(g for r in rows for g in r["itl"]),
        "tpot_ms": 1e3 * median(r["tpot"] for r in rows if r["tpot"] is not None),
        "e2e_s": median(r["e2e"] for r in rows),
        "ok": len(rows),
    }


def summarize_vllm(path: Path) -> dict[str, float]:
    res = json.loads(path.read_text())
    ok = [i for i, e in enumerate(res["errors"]) if not e]
    ttft = [res["ttfts"][i] for i in ok]
    # vLLM's latency is its last chunk's time: ttft + sum(itl) (0.26 saves no "latencies")
    lat = [res["latencies"][i] if "latencies" in res else res["ttfts"][i] + sum(res["itls"][i])
           for i in ok]
    outs = [res["output_lens"][i] for i in ok]
    tpot = [(la - t) / (n - 1) for la, t, n in zip(lat, ttft, outs, strict=True) if n > 1]
    return {
        "ttft_ms": 1e3 * median(ttft),
        "itl_ms": 1e3 * median(g for i in ok for g in res["itls"][i]),
        "tpot_ms": 1e3 * median(tpot),
        "e2e_s": median(lat),
        "ok": len(ok),
    }


def run_kvexp(url: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--client-only", str(out), "--url", url,
           "--model", args.model, "--rate", str(args.rate), "--num", str(args.num),
           "--input-len", str(args.input_len), "--output-len", str(args.output_len),
           "--vocab", str(args.vocab), "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    subprocess.run(cmd, check=True, env=env)
    return summarize_kvexp(out)


def run_vllm(url: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = shlex.split(args.vllm) + [
        "bench", "serve", "--backend", "openai", "--base-url", url,
        "--endpoint", "/v1/completions", "--model", args.model,
        "--tokenizer", str(args.tokenizer), "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len",
        str(args.output_len), "--request-rate", str(args.rate), "--burstiness", "1",
        "--num-prompts", str(args.num), "--ignore-eos", "--disable-tqdm",
        "--seed", str(args.seed), "--save-result", "--save-detailed",
        "--result-dir", str(out.parent), "--result-filename", out.name]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return summarize_vllm(out)


def start_cpu_server(tmp: Path, py: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The CPU vLLM of `py` (a .venv-vllm python) on an offline `tiny` model folder, on a
    free port."""
    if not py.exists():
        sys.exit(f"no CPU vLLM at {py}: run scripts/setup.sh, or pass --vllm-python")
    subprocess.run([sys.executable, "-m", "kvexp.models", "tiny", "--out", str(tmp)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    model_dir = tmp / "tiny"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_TARGET_DEVICE": "cpu"}
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", "tiny", "--load-format", "dummy", "--host", "127.0.0.1",
         "--port", str(port), "--max-model-len", "1024", "--no-enable-prefix-caching"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the CPU vLLM exited ({proc.returncode}); log: {tmp / 'server.log'}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, model_dir
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    sys.exit("the CPU vLLM was not ready in 300 s")


def print_table(runs: list[tuple[int, str, dict[str, float]]]) -> None:
    print(f"{'pair':>4} {'client':<6} {'ok':>4} " + " ".join(f"{m:>9}" for m in METRICS))
    for pair, client, r in runs:
        print(f"{pair:>4} {client:<6} {int(r['ok']):>4} "
              + " ".join(f"{r[m]:>9.3f}" for m in METRICS))
    print("\nkvexp / vLLM per pair, and the median over pairs:")
    ratios = {m: [] for m in METRICS}
    for pair in sorted({p for p, _, _ in runs}):
        k = next(r for p, c, r in runs if p == pair and c == "kvexp")
        v = next(r for p, c, r in runs if p == pair and c == "vllm")
        for m in METRICS:
            ratios[m].append(k[m] / v[m])
        print(f"{pair:>4}        " + " ".join(f"{k[m] / v[m]:>9.3f}" for m in METRICS))
    print("  med        " + " ".join(f"{median(ratios[m]):>9.3f}" for m in METRICS))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running OpenAI-compatible vLLM server")
    ap.add_argument("--cpu", action="store_true", help="start the CPU vLLM (tiny model)")
    ap.add_argument("--model", default="tiny", help="served model name")
    ap.add_argument("--tokenizer", type=Path, help="model folder (vLLM's client tokenizer)")
    ap.add_argument("--vllm-python", type=Path,
                    default=os.environ.get("KVEXP_VLLM_PYTHON") or ROOT / ".venv-vllm/bin/python",
                    help="the CPU vLLM's python (--cpu, and the default --vllm); default: "
                    "$KVEXP_VLLM_PYTHON, else .venv-vllm")
    ap.add_argument("--vllm", help="command that runs vLLM's CLI (default: --vllm-python "
                    "benchmarks/vllm_cli.py)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=8.0)
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=0, help="prompt ids below this (0: kvexp's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="keep per-run JSON here")
    ap.add_argument("--client-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client_only:
        kvexp_client(args.url, args.model, args.client_only, args)
        return
    if args.vllm is None:
        args.vllm = f"{shlex.quote(str(args.vllm_python))} {shlex.quote(str(HERE / 'vllm_cli.py'))}"
    tmp = args.out or Path(tempfile.mkdtemp(prefix="kvexp-vs-vllm-"))
    tmp.mkdir(parents=True, exist_ok=True)
    proc = None
    if args.cpu:
        proc, args.url, args.tokenizer = start_cpu_server(tmp, args.vllm_python)
    if not args.url or not args.tokenizer:
        ap.error("--url and --tokenizer are needed (or --cpu)")
    try:
        print(f"server {args.url}, model {args.model}: Poisson {args.rate:g} req/s, "
              f"{args.num} requests of {args.input_len} + {args.output_len} tokens, "
              f"{args.pairs} pairs, order kvexp vLLM kvexp vLLM ...")
        runs: list[tuple[int, str, dict[str, Any]]] = []
        for pair in range(args.pairs):
            runs.append((pair, "kvexp", run_kvexp(args.url, args, tmp / f"kvexp-{pair}.json")))
            runs.append((pair, "vllm", run_vllm(args.url, args, tmp / f"vllm-{pair}.json")))
            print(f"  pair {pair} done", file=sys.stderr)
        print_table(runs)
    finally:
        if proc is not None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
    print(f"\nper-run results: {tmp}")


if __name__ == "__main__":
    main()
