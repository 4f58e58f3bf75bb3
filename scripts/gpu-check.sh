#!/usr/bin/env bash
# The GPU proof, run on the GPU machine from binaries packed by scripts/gpu-pack.sh (.gpu/):
#   1. per-op parity: every CUDA provider against the CPU references (`rtllm plugins check`);
#   2. end to end: CUDA vs CPU engines on the same dummy weights (logits, greedy tokens);
#   3. speed: Llama-3.2-1B-shaped bf16 dummy weights, batch-1 decode (also without programmatic
#      dependent launch, RTLLM_CUDA_PDL=0, for comparison) and 256-request
#      throughput (128 in / 128 out), then the same through PyTorch/transformers `generate`
#      with the device-to-device copy bandwidth measured in the same run.
# Usage: scripts/gpu-check.sh [ops] [e2e] [bench] [torch]   (default: all). Logs go to $OUT;
# GPU_DIR names the packed folder (default .gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rtllm-gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
GPU_DIR=${GPU_DIR:-.gpu}
export RTLLM_PLUGIN_PATH=$PWD/$GPU_DIR/plugins RTLLM_CACHE_DIR=/tmp/rtllm-cache PYTHONUNBUFFERED=1
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
BIN=$GPU_DIR/rtllm
STAGES=${*:-ops e2e bench torch}
status=0
want() { [[ " $STAGES " == *" $1 "* ]]; }
step() { echo; echo "=== $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if want ops; then
  step "per-op parity: CUDA providers vs the CPU references"
  timeout 240 $BIN plugins check --device cuda --seed 1 2>&1 | tee "$OUT/ops.txt" || status=1
fi
if want e2e; then
  step "end to end: CUDA vs CPU engines (smollm2-135m shape, dummy weights)"
  timeout 300 $GPU_DIR/cuda_check smollm2-135m 2>&1 | tee "$OUT/e2e.txt" || status=1
fi
MODEL=(--device cuda --dummy-weights scripts/bench/configs/llama-3.2-1b.json --dummy-dtype bf16 --no-progress)
if want bench; then
  step "rtllm: batch-1 decode (128 in / 128 out)"
  timeout 240 $BIN bench latency "${MODEL[@]}" --concurrency 1 --num-requests 4 --input-len 128 --output-len 128 \
    --max-batch-size 8 --max-seq-len 512 --json > "$OUT/rtllm-latency.json" 2> "$OUT/rtllm-latency.log" || status=1
  tail -3 "$OUT/rtllm-latency.log"; cat "$OUT/rtllm-latency.json"
  step "rtllm: batch-1 decode again without programmatic dependent launch (RTLLM_CUDA_PDL=0), for comparison"
  RTLLM_CUDA_PDL=0 timeout 240 $BIN bench latency "${MODEL[@]}" --concurrency 1 --num-requests 4 --input-len 128 \
    --output-len 128 --max-batch-size 8 --max-seq-len 512 --json > "$OUT/rtllm-latency-nopdl.json" \
    2> "$OUT/rtllm-latency-nopdl.log" || status=1
  tail -3 "$OUT/rtllm-latency-nopdl.log"; cat "$OUT/rtllm-latency-nopdl.json"
  step "rtllm: throughput, 256 requests (128 in / 128 out)"
  timeout 300 $BIN bench throughput "${MODEL[@]}" --num-requests 256 --input-len 128 --output-len 128 \
    --max-batch-size 256 --max-num-tokens 8192 --max-seq-len 512 --json > "$OUT/rtllm-throughput.json" \
    2> "$OUT/rtllm-throughput.log" || status=1
  tail -3 "$OUT/rtllm-throughput.log"; cat "$OUT/rtllm-throughput.json"
fi
if want torch; then
  step "PyTorch/transformers baseline (same config, same machine)"
  timeout 420 python3 scripts/bench/torch_baseline.py --config scripts/bench/configs/llama-3.2-1b.json \
    --json "$OUT/torch.json" 2>&1 | tee "$OUT/torch.txt" | tail -30 || status=1
fi
step "summary"
python3 - "$OUT" <<'PY' || true
import json, os, sys
out = sys.argv[1]
def load(n):
    p = os.path.join(out, n)
    try:
        return json.load(open(p))
    except Exception:
        return None
lat, thr, torch = load("rtllm-latency.json"), load("rtllm-throughput.json"), load("torch.json")
nopdl = load("rtllm-latency-nopdl.json")
print(json.dumps({"rtllm_latency": lat, "rtllm_latency_no_pdl": nopdl, "rtllm_throughput": thr, "torch": torch},
                 indent=1)[:8000])
PY
exit $status
