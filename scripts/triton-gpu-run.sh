#!/usr/bin/env bash
# The Triton plugin's GPU proof, run on the GPU machine from binaries packed by
# scripts/gpu-pack.sh (triton_e2e included) into $GPU_DIR:
#   compile  kernels/triton/compile.py into $OUT/artifacts (tarred), compared with the committed
#            artifacts (the local AOT compile with the same Triton should be byte-identical);
#   (last) sweep    rope / rmsnorm launch configs compiled to scratch dirs and timed with triton_bench
#            through RTLLM_TRITON_ARTIFACTS (no rebuild);
#   check    `rtllm plugins check --device cuda --plugin rtllm-triton` (the embedded artifacts);
#   bench    triton_bench (Triton vs CUDA C bandwidth);
#   e2e      triton_e2e: CPU vs CUDA C vs Triton-pinned engines (logits, greedy tokens).
# Usage: scripts/triton-gpu-run.sh [compile] [sweep] [check] [bench] [e2e]   (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rtllm-gpu-out}
mkdir -p "$OUT"
GPU_DIR=${GPU_DIR:-.gpu}
export NCCL_NVLS_ENABLE=0 RTLLM_PLUGIN_PATH=$PWD/$GPU_DIR/plugins RTLLM_CACHE_DIR=/tmp/rtllm-cache PYTHONUNBUFFERED=1
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
STAGES=${*:-compile sweep check bench e2e}
status=0
want() { [[ " $STAGES " == *" $1 "* ]]; }
step() { echo; echo "=== $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if want compile; then
  step "compile.py on the GPU machine"
  python3 kernels/triton/compile.py --out "$OUT/artifacts" 2>&1 | tail -2 || status=1
  (cd "$OUT" && tar czf triton-artifacts.tgz artifacts && rm -rf artifacts/*.cubin)
  python3 - "$OUT" <<'PY' || status=1
import hashlib, json, sys
m = json.load(open(sys.argv[1] + "/artifacts/manifest.json"))
c = json.load(open("kernels/triton/artifacts/manifest.json"))
strip = lambda m: [(k["name"], [(v["cubin"], v["cubin_sha256"]) for v in k["variants"]]) for k in m["kernels"]]
print("GPU-compiled manifest matches the committed one:", strip(m) == strip(c))
PY
fi
if want check; then
  step "plugins check --device cuda --plugin rtllm-triton"
  timeout 240 $GPU_DIR/rtllm plugins check --device cuda --seed 1 --plugin rtllm-triton 2>&1 | tee "$OUT/check.txt" | tail -60 || status=1
fi
if want bench; then
  step "triton_bench"
  timeout 120 $GPU_DIR/triton_bench 2>&1 | tee "$OUT/bench.txt" || status=1
fi
if want e2e; then
  step "triton_e2e smollm2-135m"
  timeout 300 $GPU_DIR/triton_e2e smollm2-135m 2>&1 | tee "$OUT/e2e.txt" | grep -v "^\s*$" | tail -20 || status=1
fi
if want sweep; then
  step "sweep: rope (BT, BH, num_warps) and rmsnorm (BLOCK, num_warps)"
  i=0
  for cfg in "4 32 4" "4 32 8" "8 16 4" "4 16 2" "2 16 4"; do
    set -- $cfg; i=$((i + 1)); d=/tmp/sweep$i
    sed -e "s/INTERLEAVED = 0, BT = 4, BH = 16,/INTERLEAVED = 0, BT = $1, BH = $2,/" \
        -e "/^constexprs = { INTERLEAVED = 0/{n;s/^num_warps = 4/num_warps = $3/}" kernels/triton/kernels.toml > /tmp/k$i.toml
    python3 kernels/triton/compile.py --toml /tmp/k$i.toml --out $d > /dev/null 2>&1 || { echo "compile $cfg failed"; continue; }
    echo "rope BT=$1 BH=$2 warps=$3: $(RTLLM_TRITON_ARTIFACTS=$d timeout 60 $GPU_DIR/triton_bench 2>&1 | grep '^| rope')"
  done
  for cfg in "4096 8" "2048 8" "1024 4"; do
    set -- $cfg; i=$((i + 1)); d=/tmp/sweep$i
    sed -e "s/^constexprs = { BLOCK = 4096 }/constexprs = { BLOCK = $1 }/" \
        -e "/^constexprs = { BLOCK = $1 }/{n;s/^num_warps = 8/num_warps = $2/}" kernels/triton/kernels.toml > /tmp/k$i.toml
    python3 kernels/triton/compile.py --toml /tmp/k$i.toml --out $d > /dev/null 2>&1 || { echo "compile $cfg failed"; continue; }
    echo "norm BLOCK=$1 warps=$2:"
    RTLLM_TRITON_ARTIFACTS=$d timeout 60 $GPU_DIR/triton_bench 2>&1 | grep 'rmsnorm'
  done
fi
exit $status
