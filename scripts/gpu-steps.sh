#!/usr/bin/env bash
# The runs behind docs/h200.md's sections 5 and 6 (verdicts at repeats=5, memory beside
# nvidia-smi, kvexp's driver beside vLLM's client, trace replay, the capacity answer):
#   scripts/gpu-steps.sh OUTPUT_ROOT [STEP ...]
# steps: tutorial driver azure pressure capacity; capacity confirms the sim plan in
# $CAPACITY_PLAN (default docs/capacity/sim-plan/capacity.json), CONFIRM_REPEATS runs a point
# nvidia-smi is sampled every 200 ms throughout (OUTPUT_ROOT/nvidia-smi.csv); every step
# logs its command, exit code and wall time; a step that fails does not stop the others.
set -uo pipefail
ROOT="${1:?usage: scripts/gpu-steps.sh OUTPUT_ROOT [STEP ...]}"; shift
STEPS="${*:-tutorial driver azure pressure}"
mkdir -p "$ROOT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
PY="${PYTHON:-python3}"
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }
since() { "$PY" -c "import time; print(round(time.time() - $1, 1))"; }
q=timestamp,memory.used,memory.reserved,memory.total
nvidia-smi --query-gpu=$q --format=csv,noheader,nounits >/dev/null 2>&1 || q=timestamp,memory.used,memory.total
echo "# nvidia-smi --query-gpu=$q (MiB)" > "$ROOT/nvidia-smi.csv"
nvidia-smi --query-gpu=$q --format=csv,noheader,nounits -lms 200 >> "$ROOT/nvidia-smi.csv" &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT
sweep() {  # sweep NAME ARGS...: one timed multirun into ROOT/NAME
  local name=$1; shift; local t0; t0=$(date +%s.%N)
  stamp "python -m kvexp -m $* hydra.sweep.dir=$ROOT/$name"
  "$PY" -m kvexp -m "$@" "hydra.sweep.dir=$ROOT/$name"; local rc=$?
  stamp "$name: exit $rc, wall $(since "$t0") s"
}
driver() {  # kvexp's driver vs vllm bench serve, one kvcached server, 3 pairs A B A B
  local dir="$ROOT/driver_vs_vllm"; mkdir -p "$dir"
  "$PY" -m kvexp.models qwen2.5-0.5b-instruct --out "$dir/models" >/dev/null
  local model="$dir/models/qwen2.5-0.5b-instruct"
  stamp "vllm serve $model (kvcached) on 127.0.0.1:8123"
  ENABLE_KVCACHED=true KVCACHED_AUTOPATCH=1 KVCACHED_IPC_NAME=kvexp_driver_bench \
    VLLM_USE_V2_MODEL_RUNNER=0 setsid "$PY" -m vllm.entrypoints.openai.api_server \
    --model "$model" --served-model-name qwen --load-format dummy --enforce-eager \
    --host 127.0.0.1 --port 8123 --max-model-len 2048 --no-enable-prefix-caching \
    > "$dir/server.log" 2>&1 & local srv=$!
  for _ in $(seq 240); do
    curl -sf http://127.0.0.1:8123/health >/dev/null && break
    kill -0 $srv 2>/dev/null || { stamp "server died"; tail -20 "$dir/server.log"; return; }
    sleep 1
  done
  stamp "server ready; benchmarks/driver_vs_vllm.py"
  "$PY" benchmarks/driver_vs_vllm.py --url http://127.0.0.1:8123 --model qwen \
    --tokenizer "$model" --vllm "$PY -m vllm.entrypoints.cli.main" --pairs 3 --rate 8 \
    --num 200 --input-len 512 --output-len 128 --vocab 150000 --out "$dir/runs" \
    | tee "$dir/table.txt"
  stamp "driver_vs_vllm: exit ${PIPESTATUS[0]}"
  kill -TERM -- -$srv 2>/dev/null; wait $srv 2>/dev/null
}
stamp "start; GPU: $(nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader)"
for step in $STEPS; do
  case $step in
    tutorial) sweep tutorial_r5 experiment=tutorial_single repeats=5 ;;
    driver) driver ;;
    azure) sweep azure experiment=azure_two_models ;;
    pressure) sweep pressure_r5 experiment=memory_pressure repeats=5 ;;
    capacity) sweep capacity experiment=capacity engine=vllm \
                "capacity.plan=${CAPACITY_PLAN:-$PWD/docs/capacity/sim-plan/capacity.json}" \
                "capacity.confirm_repeats=${CONFIRM_REPEATS:-1}" ;;
    *) stamp "unknown step $step" ;;
  esac
done
stamp "done; GPU used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader);" \
      "segments left: [$(ls /dev/shm | grep -i kvcached || true)]"
