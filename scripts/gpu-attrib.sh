#!/usr/bin/env bash
# In-context cost of kernels, on the GPU machine from binaries packed by scripts/gpu-pack.sh:
# Llama-3.2-1B-shaped bf16 dummy weights, batch-1 decode (128 in / 128 out), GPU time per decode
# step (RTLLM_PROFILE_STEPS) once per argument: `base` as is, anything else is an
# RTLLM_CUDA_REPEAT rule (one extra launch of the matching kernels; the difference to `base`
# divided by the launches per step is what one launch costs inside the pipelined step).
# Usage: scripts/gpu-attrib.sh base gemv_m1_bf16@384:1 pa_decode:1 fused_add_rmsnorm:1 ...
# (at batch 1 on 132 SMs the GEMV grids are: QKV 384 blocks, O and down 256, gate/up 1024,
# LM head 8016).
set -uo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=${GPU_DIR:-.gpu}
export RTLLM_PLUGIN_PATH=$PWD/$GPU_DIR/plugins RTLLM_CACHE_DIR=${RTLLM_CACHE_DIR:-/tmp/rtllm-cache}
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
TMP=$(mktemp -d)
run() {
  local label=$1 rule=$2
  RTLLM_CUDA_REPEAT=$rule RTLLM_PROFILE_STEPS=1 timeout 200 "$GPU_DIR/rtllm" bench latency --device cuda \
    --dummy-weights scripts/bench/configs/llama-3.2-1b.json --dummy-dtype bf16 --no-progress --concurrency 1 \
    --num-requests "${NREQ:-3}" --input-len 128 --output-len 128 --max-batch-size 8 --max-seq-len 512 --json \
    > "$TMP/out.json" 2> "$TMP/err.txt" || { echo "$label: failed"; tail -5 "$TMP/err.txt"; return; }
  local gpu tpot
  gpu=$(awk '/^decode-only/{print $3}' "$TMP/err.txt")
  tpot=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["tpot_ms"]["p50"])' "$TMP/out.json")
  printf "%-32s GPU us/decode step %8s   TPOT p50 %s ms\n" "$label" "$gpu" "$tpot"
}
for spec in "${@:-base}"; do
  if [ "$spec" = base ]; then run base ""; else run "$spec" "$spec"; fi
done
rm -rf "$TMP"
