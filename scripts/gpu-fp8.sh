#!/usr/bin/env bash
# FP8 on the GPU (issue 21), run on the GPU machine from binaries packed here by
# scripts/gpu-pack.sh (.gpu/; nothing is built there). One call, under 9 minutes on an H100:
#   1. ops: every CUDA provider against the references (`rtllm plugins check --device cuda`;
#      fp8_matmul's cases: per-tensor / per-channel, static / dynamic / capped, bias, M = 1..8
#      on the FP8 GEMV, large M on cuBLASLt FP8, odd K / N on the fallback);
#   2. e2e: CUDA vs CPU engines on dummy FP8 weights (cuda_check ... fp8: logits, greedy tokens),
#      and on the four HF FP8 checkpoint formats (fixtures written there by torch): greedy text;
#   3. bw: device-to-device copy bandwidth (torch, as scripts/bench/torch_baseline.py);
#   4. bench: Llama-3-8B shape, dummy weights, FP8 and bf16: batch-1 decode TPOT (128 in / 128
#      out) and throughput (1024 requests, 128 in / 128 out);
#   kv: the FP8 KV cache (--kv-cache-dtype fp8): `plugins check --device cuda --op paged_attention`
#      (the f8_e4m3 cases against the reference), cuda_check bf16kv,fp8kv (CUDA vs CPU engines with
#      FP8 caches on both), the KV-scheme checkpoints (tests/fixtures/fp8/{ct_static_kv,modelopt_kv})
#      CUDA vs CPU greedy text, and latency / throughput of the Llama-3-8B shape with FP8 weights
#      and the FP8 cache (rows fp8kv of the table);
#   5. a table: TPOT against the weight-bandwidth roofline (weight bytes read per decode token /
#      copy bandwidth; FP8 linears 1 byte, embeddings row and lm_head bf16) and the issue's
#      targets (TPOT >= 85% of roofline, FP8 throughput >= 28,312 output tok/s).
# Usage: scripts/gpu-fp8.sh [ops] [e2e] [kv] [bw] [bench]   (default: all). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rtllm-gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
GPU_DIR=$(realpath "${GPU_DIR:-.gpu}")
export RTLLM_PLUGIN_PATH=$GPU_DIR/plugins RTLLM_CACHE_DIR=/tmp/rtllm-cache PYTHONUNBUFFERED=1
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
BIN=$GPU_DIR/rtllm
STAGES=${*:-ops e2e kv bw bench}
status=0
want() { [[ " $STAGES " == *" $1 "* ]]; }
step() { echo; echo "=== $*"; }
CONFIG=scripts/bench/configs/llama-3-8b.json

# greedy_text FIXTURE...: 16 greedy tokens of each tests/fixtures/fp8 checkpoint on the CPU and on
# CUDA (bf16 vs f32 activations, or k/v landing on neighbouring E4M3 codes, can flip a near-tie).
greedy_text() {
  local f cpu gpu
  for f in "$@"; do
    gen() { timeout 30 $BIN generate --model tests/fixtures/fp8/$f --device $1 --max-tokens 16 --ignore-eos \
      "The quick brown fox" 2>/dev/null; }
    cpu=$(gen cpu); gpu=$(gen cuda)
    if [ -n "$gpu" ] && [ "$cpu" == "$gpu" ]; then echo "$f: CUDA == CPU greedy text"; else
      echo "$f: CUDA and CPU differ"; echo "  cpu: $cpu"; echo "  gpu: $gpu"; fi
  done
}

# bench_runs NAME ARGS...: the Llama-3-8B shape on dummy weights with ARGS, batch-1 decode TPOT and
# throughput (results in $OUT/{latency,throughput}-NAME.json, read by the summary).
bench_runs() {
  local name=$1; shift
  local model=(--device cuda --dummy-weights $CONFIG --no-progress "$@")
  step "rtllm $name: batch-1 decode (128 in / 128 out)"
  timeout 55 $BIN bench latency "${model[@]}" --concurrency 1 --num-requests 4 --input-len 128 --output-len 128 \
    --max-batch-size 8 --max-seq-len 512 --json > "$OUT/latency-$name.json" 2> "$OUT/latency-$name.log" || status=1
  tail -3 "$OUT/latency-$name.log"
  step "rtllm $name: throughput, 1024 requests (128 in / 128 out)"
  timeout 80 $BIN bench throughput "${model[@]}" --num-requests 1024 --input-len 128 --output-len 128 \
    --max-batch-size 512 --max-num-tokens 8192 --max-seq-len 512 --json > "$OUT/throughput-$name.json" \
    2> "$OUT/throughput-$name.log" || status=1
  tail -3 "$OUT/throughput-$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if want ops; then
  step "per-op parity: CUDA providers vs the references"
  timeout 200 $BIN plugins check --device cuda --seed 1 > "$OUT/ops.txt" 2>&1 || status=1
  grep -iE "fp8|dummy_fill|fail|error" "$OUT/ops.txt" | head -60; tail -3 "$OUT/ops.txt"
fi
if want e2e; then
  step "end to end: CUDA vs CPU engines, dummy FP8 weights (smollm2-135m shape)"
  timeout 90 $GPU_DIR/cuda_check smollm2-135m fp8 2>&1 | tee "$OUT/e2e.txt" || status=1
  step "end to end: HF FP8 checkpoints (scripts/reference/make_fp8_checkpoints.py, written here by torch), CUDA vs CPU greedy text"
  if timeout 60 python3 scripts/reference/make_fp8_checkpoints.py > "$OUT/fixtures.log" 2>&1; then
    greedy_text ct_static ct_dynamic modelopt fbgemm modelopt_pcpt 2>&1 | tee "$OUT/fixtures.txt"
  else
    echo "fixtures not written (see $OUT/fixtures.log)"; tail -5 "$OUT/fixtures.log"
  fi
fi
if want kv; then
  step "FP8 KV cache: CUDA paged_attention (f8_e4m3 caches among the cases) vs the reference"
  timeout 150 $BIN plugins check --device cuda --op paged_attention --seed 1 > "$OUT/kv-ops.txt" 2>&1 || status=1
  grep -E "f8_e4m3|FAIL|error" "$OUT/kv-ops.txt" | head -40; tail -3 "$OUT/kv-ops.txt"
  step "FP8 KV cache end to end: CUDA vs CPU engines, FP8 cache on both (bf16 and FP8 dummy weights)"
  timeout 120 $GPU_DIR/cuda_check smollm2-135m bf16kv,fp8kv 2>&1 | tee "$OUT/kv-e2e.txt" || status=1
  step "FP8 KV cache: checkpoints with a KV scheme (compressed-tensors, ModelOpt), CUDA vs CPU greedy text"
  greedy_text ct_static_kv modelopt_kv 2>&1 | tee "$OUT/kv-fixtures.txt"
  bench_runs fp8kv --dummy-dtype fp8 --kv-cache-dtype fp8
fi
if want bw; then
  step "device-to-device copy bandwidth"
  timeout 40 python3 - "$OUT/bw.json" <<'PY' || status=1
import json, sys
sys.path.insert(0, "scripts/bench")
from torch_baseline import measure_bandwidth
r = measure_bandwidth("cuda", 2048, 20)
json.dump(r, open(sys.argv[1], "w"))
print(f"copy bandwidth {r['tb_per_s']:.3f} TB/s ({r['counting']})")
PY
fi
if want bench; then
  for dt in fp8 bf16; do bench_runs $dt --dummy-dtype $dt; done
fi
step "summary"
python3 - "$OUT" "$CONFIG" <<'PY' || true
import json, os, sys
out, config = sys.argv[1], json.load(open(sys.argv[2]))
def load(n):
    try:
        return json.load(open(os.path.join(out, n)))
    except Exception:
        return None
h, i, v, L = config["hidden_size"], config["intermediate_size"], config["vocab_size"], config["num_hidden_layers"]
d = h // config["num_attention_heads"]
q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
linear = L * (h * (q + 2 * kv) + q * h + 3 * h * i)
small = L * 2 * h + h  # norms
bytes_per_token = {"fp8": linear * 1 + 4 * L * (q + 2 * kv + h + 2 * i + h) + (v * h + small + h) * 2,
                   "bf16": (linear + v * h + small + h) * 2}
bytes_per_token["fp8kv"] = bytes_per_token["fp8"]  # the weights' roofline; the FP8 cache halves KV reads
bw = load("bw.json")
tbs = bw["tb_per_s"] if bw else None
print(f"copy bandwidth: {tbs:.3f} TB/s" if tbs else "copy bandwidth: not measured")
print(f"{'dtype':<6} {'GB/token':>9} {'roofline ms':>12} {'TPOT p50 ms':>12} {'% roofline':>11} {'out tok/s':>11}")
for dt in ("fp8", "bf16", "fp8kv"):
    lat, thr = load(f"latency-{dt}.json"), load(f"throughput-{dt}.json")
    gb = bytes_per_token[dt] / 1e9
    roof = bytes_per_token[dt] / (tbs * 1e12) * 1e3 if tbs else None
    tpot = lat["tpot_ms"]["p50"] if lat else None
    pct = f"{100 * roof / tpot:.1f}%" if roof and tpot else "-"
    tok = f"{thr['output_throughput']:.0f}" if thr else "-"
    print(f"{dt:<6} {gb:>9.3f} {roof if roof else float('nan'):>12.3f} {tpot if tpot else float('nan'):>12.3f} {pct:>11} {tok:>11}")
print("targets: FP8 TPOT >= 85% of roofline; FP8 throughput >= 28,312 output tok/s (TensorRT-LLM, H100)")
PY
exit $status
