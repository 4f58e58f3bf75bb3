#!/usr/bin/env bash
# Before/after on one GPU machine, in one run (same card): a baseline pack ($BASE_DIR, e.g. main
# before a change, packed by scripts/gpu-pack.sh with GPU_DIR=.gpu-base; needs only rtllm and
# plugins/) and the new pack ($NEW_DIR, default .gpu). Prints:
#   1. `rtllm generate` on CUDA: baseline vs new greedy text, device vs host sampling, seeded
#      reproduction, and the per-op / per-step profilers running;
#   2. speed: batch-1 decode (Llama-3.2-1B shape, bf16 dummy weights, 128 in / 128 out), the two
#      packs alternating twice each, then 256-request throughput once each;
#   3. per-op parity of the new CUDA plugins against the CPU references (`plugins check`);
#   4. end to end: the new cuda_check (CUDA vs CPU engines, dummy weights).
# Usage: BASE_DIR=.gpu-base NEW_DIR=.gpu scripts/gpu-compare.sh   (logs in $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rtllm-gpu-compare}
mkdir -p "$OUT"
BASE=$PWD/${BASE_DIR:-.gpu-base}
NEW=$PWD/${NEW_DIR:-.gpu}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 RTLLM_CACHE_DIR=/tmp/rtllm-cache
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
status=0
step() { echo; echo "=== $*"; }
# run <pack dir> <log name> <args...>: the pack's rtllm with its own plugins; stdout to $OUT/name.txt.
run() {
  local dir=$1 name=$2; shift 2
  RTLLM_PLUGIN_PATH=$dir/plugins timeout 300 "$dir/rtllm" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  local rc=$?
  [ $rc -eq 0 ] || { echo "$name: rc=$rc"; tail -3 "$OUT/$name.err"; status=1; }
  return $rc
}
same() { cmp -s "$OUT/$1.txt" "$OUT/$2.txt" && echo "$3: identical" || { echo "$3: DIFFER"; status=1; }; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "1. rtllm generate on CUDA (dummy weights): baseline vs new"
P="The quick brown fox jumps over the lazy dog"
G=(generate --device cuda "$P" --max-tokens 64 --ignore-eos)
for cfg in smollm2-135m; do
  run "$BASE" "base-$cfg" "${G[@]}" --dummy-weights $cfg
  run "$NEW" "new-$cfg" "${G[@]}" --dummy-weights $cfg --stats && tail -1 "$OUT/new-$cfg.err"
  run "$NEW" "newhost-$cfg" "${G[@]}" --dummy-weights $cfg --host-sampling
  same "base-$cfg" "new-$cfg" "$cfg f32 greedy text, baseline vs new (device sampling)"
  same "new-$cfg" "newhost-$cfg" "$cfg f32 greedy text, device vs host sampling"
done
S=(generate --device cuda "$P" --max-tokens 32 --temperature 0.8 --top-p 0.9 --seed 3 --dummy-weights smollm2-135m)
run "$NEW" seeded1 "${S[@]}"; run "$NEW" seeded2 "${S[@]}"
same seeded1 seeded2 "seeded device sampling reproduces"
RTLLM_PROFILE_OPS=1 run "$NEW" profile-ops "${G[@]}" --dummy-weights smollm2-135m --dummy-dtype bf16 \
  && echo "RTLLM_PROFILE_OPS: $(grep -c . "$OUT/profile-ops.err") lines on stderr" && grep -i -m3 "paged_attention\|matmul" "$OUT/profile-ops.err"
RTLLM_PROFILE_STEPS=1 run "$NEW" profile-steps "${G[@]}" --dummy-weights smollm2-135m --dummy-dtype bf16 \
  && grep -i -m3 "step\|gpu" "$OUT/profile-steps.err"

step "2. speed: batch-1 decode, Llama-3.2-1B shape bf16 (alternating baseline / new)"
M=(--device cuda --dummy-weights scripts/bench/configs/llama-3.2-1b.json --dummy-dtype bf16 --no-progress)
L=(bench latency "${M[@]}" --concurrency 1 --num-requests 4 --input-len 128 --output-len 128 --max-batch-size 8
  --max-seq-len 512 --json)
for i in 1 2; do
  for which in base new; do
    dir=$BASE; [ $which = new ] && dir=$NEW
    run "$dir" "lat-$which-$i" "${L[@]}"
  done
done
T=(bench throughput "${M[@]}" --num-requests 256 --input-len 128 --output-len 128 --max-batch-size 256
  --max-num-tokens 8192 --max-seq-len 512 --json)
run "$BASE" thr-base "${T[@]}"
run "$NEW" thr-new "${T[@]}"

step "3. per-op parity: new CUDA providers vs the CPU references"
RTLLM_PLUGIN_PATH=$NEW/plugins timeout 240 "$NEW/rtllm" plugins check --device cuda --seed 1 > "$OUT/ops.txt" 2>&1 || status=1
tail -4 "$OUT/ops.txt"

step "4. end to end: CUDA vs CPU engines (smollm2-135m shape, dummy weights)"
RTLLM_PLUGIN_PATH=$NEW/plugins timeout 300 "$NEW/cuda_check" smollm2-135m > "$OUT/e2e.txt" 2>&1 || status=1
cat "$OUT/e2e.txt"

step "summary"
python3 - "$OUT" <<'PY' || true
import json, os, sys
out = sys.argv[1]
def load(n):
    try:
        return json.load(open(os.path.join(out, n + ".txt")))
    except Exception:
        return None
print("| run | baseline TPOT p50 ms | new TPOT p50 ms |")
print("|---|---|---|")
for i in (1, 2):
    b, n = load(f"lat-base-{i}"), load(f"lat-new-{i}")
    f = lambda r: f"{r['tpot_ms']['p50']:.4f}" if r else "-"
    print(f"| latency {i} | {f(b)} | {f(n)} |")
b, n = load("thr-base"), load("thr-new")
g = lambda r: f"{r['output_throughput']:.0f} out tok/s (TTFT p50 {r['ttft_ms']['p50']:.0f} ms, TPOT p50 {r['tpot_ms']['p50']:.2f} ms)" if r else "-"
print(f"| throughput 256 x 128/128 | {g(b)} | {g(n)} |")
PY
exit $status
