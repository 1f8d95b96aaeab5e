#!/usr/bin/env bash
# The runs behind docs/h200.md, as made on an H200 with vLLM 0.26 + kvcached 0.1.6.
#   scripts/gpu-evidence.sh OUTPUT_ROOT [extra overrides for every run]
# Each experiment is one multirun; its sweep folder is OUTPUT_ROOT/<experiment>.
set -uo pipefail
ROOT="${1:?usage: scripts/gpu-evidence.sh OUTPUT_ROOT [overrides]}"; shift
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
run() {  # run NAME ARGS...: one multirun into ROOT/NAME; a failure does not stop the rest
  local name=$1; shift
  echo "=== $(date -u +%FT%TZ) python -m kvexp -m $* hydra.sweep.dir=$ROOT/$name"
  "$PY" -m kvexp -m "$@" "hydra.sweep.dir=$ROOT/$name" || echo "=== $name exited with $?"
}
run tutorial_single experiment=tutorial_single "$@"
run burst_sweep allocator=kvcached,static burst_size=2,6,12 "$@"
run two_models_pressure experiment=two_models_pressure "$@"
echo "=== $(date -u +%FT%TZ) done"
