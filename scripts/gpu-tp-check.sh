#!/usr/bin/env bash
# Tensor parallelism on a multi-GPU machine (2x H200), from binaries packed by
# scripts/gpu-pack.sh into $GPU_DIR (default .gpu; the same environment as scripts/gpu-check.sh):
#   1. parity on small dummy models (f32 weights, cuda): tp_check (prefill logits, max |diff|,
#      and greedy tokens through the executor, TP=1 vs TP=2), then `rtllm generate` output
#      with --tp 1 and --tp 2 (the CLI path; text of the byte-level dummy tokenizer);
#   2. speed: Llama-3-8B-shaped bf16 dummy weights at TP=1 and TP=2: batch-1 decode
#      (128 in / 128 out) and throughput (256 requests, 128 in / 128 out);
#   3. a table of the results (last).
# Usage: scripts/gpu-tp-check.sh [parity] [bench]   (default: both). Logs go to $OUT;
# TP_MODELS overrides the parity models (default "tiny-llama llama-3.2-1b").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rtllm-gpu-tp-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
GPU_DIR=${GPU_DIR:-.gpu}
export RTLLM_PLUGIN_PATH=$PWD/$GPU_DIR/plugins RTLLM_CACHE_DIR=/tmp/rtllm-cache PYTHONUNBUFFERED=1
export RTLLM_LOG=${RTLLM_LOG:-warn}
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
BIN=$GPU_DIR/rtllm
STAGES=${*:-parity bench}
status=0
want() { [[ " $STAGES " == *" $1 "* ]]; }
step() { echo; echo "=== $*"; }

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
nvidia-smi topo -m 2>/dev/null | head -5 || true
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$GPUS" -lt 2 ]; then
  echo "need 2 GPUs for TP=2, found $GPUS"
  exit 1
fi

# Runs a command with a time limit; if it stalls, prints where its threads wait (thread names,
# kernel wait channels, gdb backtraces when gdb is there) and the GPUs' state, then kills it.
watch_run() {
  local limit=$1
  shift
  "$@" &
  local pid=$! waited=0
  while kill -0 $pid 2>/dev/null && [ $waited -lt "$limit" ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 $pid 2>/dev/null; then
    echo "STALLED after ${limit}s: $*"
    for t in /proc/$pid/task/*; do echo "  thread $(cat $t/comm 2>/dev/null) wchan=$(cat $t/wchan 2>/dev/null)"; done
    command -v gdb >/dev/null && timeout 60 gdb -p $pid -batch -ex "thread apply all bt 12" 2>/dev/null | grep -E "^Thread|^#" | head -150
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader || true
    kill -9 $pid
    wait $pid 2>/dev/null
    return 124
  fi
  wait $pid
}

# Greedy output of one model at one TP size (extra flags after the size).
gen() {
  local model=$1 tp=$2
  shift 2
  timeout 300 $BIN generate --device cuda --dummy-weights "$model" --tp "$tp" --max-tokens 48 --ignore-eos --stats \
    "$@" "The quick brown fox jumps over the lazy dog" > "$OUT/gen-$model-tp$tp.txt" 2> "$OUT/gen-$model-tp$tp.log"
}

PARITY=()
if want parity; then
  for model in ${TP_MODELS:-tiny-llama llama-3.2-1b}; do
    step "parity: $model (dummy f32, cuda): logits and greedy tokens, TP=1 vs TP=2 (tp_check)"
    if watch_run 150 $GPU_DIR/tp_check "$model" 2 f32 cuda > "$OUT/tp-check-$model.txt" 2>&1; then
      PARITY+=("$model:tp_check=ok")
    else
      PARITY+=("$model:tp_check=FAILED")
      status=1
    fi
    cat "$OUT/tp-check-$model.txt"
  done
  for model in ${TP_MODELS:-tiny-llama llama-3.2-1b}; do
    step "CLI: rtllm generate $model (dummy f32, cuda): --tp 1 vs --tp 2, 48 greedy tokens"
    gen "$model" 1 || { status=1; tail -5 "$OUT/gen-$model-tp1.log"; }
    if ! gen "$model" 2; then
      status=1
      tail -5 "$OUT/gen-$model-tp2.log"
      echo "--- retry without CUDA graphs (is the failure in capturing collectives?)"
      gen "$model" 2 --no-cuda-graphs || tail -5 "$OUT/gen-$model-tp2.log"
    fi
    tail -1 "$OUT/gen-$model-tp1.log"; tail -1 "$OUT/gen-$model-tp2.log"
    if [ -s "$OUT/gen-$model-tp1.txt" ] && cmp -s "$OUT/gen-$model-tp1.txt" "$OUT/gen-$model-tp2.txt"; then
      echo "PARITY $model: identical output"
      PARITY+=("$model:generate=identical")
    else
      echo "PARITY $model: outputs differ"
      echo "tp1: $(cat "$OUT/gen-$model-tp1.txt" | head -c 400)"
      echo "tp2: $(cat "$OUT/gen-$model-tp2.txt" | head -c 400)"
      python3 - "$OUT/gen-$model-tp1.txt" "$OUT/gen-$model-tp2.txt" <<'PY' || true
import sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"first difference at byte {n} of {len(a)} / {len(b)}")
PY
      PARITY+=("$model:generate=DIFFERENT")
      status=1
    fi
  done
fi

MODEL=(--device cuda --dummy-weights scripts/bench/configs/llama-3-8b.json --dummy-dtype bf16 --no-progress)
if want bench; then
  for tp in 1 2; do
    step "rtllm TP=$tp: batch-1 decode (Llama-3-8B shape, bf16, 128 in / 128 out)"
    timeout 420 $BIN bench latency "${MODEL[@]}" --tp $tp --concurrency 1 --num-requests 4 --input-len 128 \
      --output-len 128 --max-batch-size 8 --max-seq-len 512 --json > "$OUT/latency-tp$tp.json" \
      2> "$OUT/latency-tp$tp.log" || { status=1; tail -5 "$OUT/latency-tp$tp.log"; }
    step "rtllm TP=$tp: throughput, 256 requests (128 in / 128 out)"
    timeout 480 $BIN bench throughput "${MODEL[@]}" --tp $tp --num-requests 256 --input-len 128 --output-len 128 \
      --max-batch-size 256 --max-num-tokens 8192 --max-seq-len 512 --json > "$OUT/throughput-tp$tp.json" \
      2> "$OUT/throughput-tp$tp.log" || { status=1; tail -5 "$OUT/throughput-tp$tp.log"; }
  done
fi

step "summary (Llama-3-8B shape, bf16 dummy weights, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
echo "parity: ${PARITY[*]:-not run}"
python3 - "$OUT" <<'PY' || true
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
def get(report, *keys):
    for k in keys:
        report = report.get(k) if isinstance(report, dict) else None
    return f"{report:.1f}" if isinstance(report, (int, float)) else "-"
rows = []
for tp in (1, 2):
    lat, thr = load(f"latency-tp{tp}.json"), load(f"throughput-tp{tp}.json")
    rows.append((f"TP={tp}", get(lat, "tpot_ms", "mean"), get(lat, "per_user_output_throughput"),
                 get(lat, "ttft_ms", "mean"), get(thr, "output_throughput"), get(thr, "total_throughput"),
                 get(thr, "duration_s")))
head = ("", "decode TPOT ms", "decode tok/s", "TTFT ms (b=1)", "256x128/128 out tok/s", "total tok/s", "wall s")
width = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
for r in [head] + rows:
    print(" | ".join(str(c).rjust(w) for c, w in zip(r, width)))
PY
exit $status
