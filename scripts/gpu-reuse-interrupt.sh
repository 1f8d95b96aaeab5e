#!/usr/bin/env bash
# The runs behind docs/h200.md's "Shared servers, SIGTERM and resume" section:
#   scripts/gpu-reuse-interrupt.sh OUTPUT_ROOT
# 1. the 6-point sweep with shared servers (2 server starts)
# 2. a sweep stopped by SIGTERM mid-point: GPU memory and processes after it, then resume
# 3. the same 6-point sweep with a server per point (6 starts), for the wall time
#    (skipped with ISOLATED=0)
set -uo pipefail
ROOT="${1:?usage: scripts/gpu-reuse-interrupt.sh OUTPUT_ROOT}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
gpu() { nvidia-smi --query-gpu=memory.used --format=csv,noheader; }
apps() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; }
since() { "$PY" -c "import time; print(round(time.time() - $1, 1))"; }
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }
sweep() {  # sweep NAME ARGS...: one timed multirun into ROOT/NAME
  local name=$1; shift; local t0; t0=$(date +%s.%N)
  stamp "python -m kvexp -m $* hydra.sweep.dir=$ROOT/$name"
  "$PY" -m kvexp -m "$@" "hydra.sweep.dir=$ROOT/$name"; local rc=$?
  stamp "$name: exit $rc, wall $(since $t0) s; GPU used $(gpu)"
}
stamp "start; GPU used $(gpu)"
sweep shared allocator=kvcached,static burst_size=2,6,12

stamp "python -m kvexp -m allocator=kvcached,static burst_size=6 reuse_servers=false" \
      "hydra.sweep.dir=$ROOT/interrupted  (SIGTERM once point 0's workload runs)"
"$PY" -m kvexp -m allocator=kvcached,static burst_size=6 reuse_servers=false \
      "hydra.sweep.dir=$ROOT/interrupted" & pid=$!
for _ in $(seq 600); do
  grep -qs workload_start "$ROOT/interrupted/0/point.json" && break
  kill -0 $pid 2>/dev/null || break; sleep 0.5
done
sleep 4; stamp "GPU used $(gpu) while point 0 runs; sending SIGTERM to $pid"
kill -TERM $pid; wait $pid; stamp "exit $? after SIGTERM"
sleep 2; stamp "GPU used after: $(gpu); compute processes: [$(apps)]"
stamp "kvexp/vLLM processes left: [$(pgrep -af 'kvexp|vllm' | grep -v gpu-reuse || true)]"
stamp "kvcached segments left: [$(ls /dev/shm | grep kvcached || true)]"
t0=$(date +%s.%N); stamp "python -m kvexp resume $ROOT/interrupted"
"$PY" -m kvexp resume "$ROOT/interrupted"; stamp "resume: exit $?, wall $(since $t0) s"

[ "${ISOLATED:-1}" = 0 ] || sweep isolated allocator=kvcached,static burst_size=2,6,12 \
  reuse_servers=false
stamp done
