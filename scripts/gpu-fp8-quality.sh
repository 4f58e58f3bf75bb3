#!/usr/bin/env bash
# FP8 quality on the GPU machine (issue 21): perplexity of a model in bf16, with FP8 weights
# (`rtllm quantize --format fp8` run there, calibrated on Persuasion) and with FP8 weights plus
# the FP8 KV cache, on the same text (the first EVAL_BYTES of Pride and Prejudice), all with
# --device cuda; then the same text on the CPU reference for the FP8 model (agreement check).
# The GPU machine cannot download, and at most 64 MiB travels per call: the model arrives in
# chunks over consecutive calls (scripts/gpu-chunks.sh splits it here; each call appends its
# chunk under $STAGE, which survives while the machine stays warm).
# Usage on the GPU machine: scripts/gpu-fp8-quality.sh MODEL_SHA256 EVAL.txt CALIB.txt
#   (binaries from $PACK, default /tmp/rtllm-pack, copied there by the first chunk's call)
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${STAGE:-/tmp/rtllm-stage}
PACK=${PACK:-/tmp/rtllm-pack}
OUT=${OUT:-/tmp/rtllm-gpu-out}
EVAL_BYTES=${EVAL_BYTES:-120000}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 RTLLM_PLUGIN_PATH=$PACK/plugins RTLLM_CACHE_DIR=/tmp/rtllm-cache
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib; do [ -d "$d" ] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}; done
want_sha=$1 eval_src=$2 calib=$3
model=$STAGE/model.gguf
cat "$STAGE"/part.* > "$model"
got_sha=$(sha256sum "$model" | cut -d' ' -f1)
[ "$got_sha" == "$want_sha" ] || { echo "model checksum $got_sha, expected $want_sha: a chunk is missing"; exit 1; }
head -c "$EVAL_BYTES" "$eval_src" > "$STAGE/eval.txt"
BIN=$PACK/rtllm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== quantize (CPU of this machine, calibration text $(basename "$calib"))"
/usr/bin/time -f "quantize: %e s" $BIN quantize --format fp8 --model "$model" --output "$STAGE/fp8" --force \
  --calib-file "$calib" 2>&1 | tail -3
ppl() { # name, args...
  local name=$1; shift
  timeout 240 $BIN eval perplexity "$@" --json "$STAGE/eval.txt" > "$OUT/ppl-$name.json" 2> "$OUT/ppl-$name.log" \
    || { echo "$name failed:"; tail -3 "$OUT/ppl-$name.log"; }
}
ppl bf16 --model "$model" --device cuda
ppl fp8 --model "$STAGE/fp8" --device cuda
ppl fp8-kv --model "$STAGE/fp8" --device cuda --kv-cache-dtype fp8
ppl bf16-kv --model "$model" --device cuda --kv-cache-dtype fp8
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for name in ("bf16", "fp8", "fp8-kv", "bf16-kv"):
    try:
        rows[name] = json.load(open(os.path.join(out, f"ppl-{name}.json")))
    except Exception:
        rows[name] = None
base = rows["bf16"]["perplexity"] if rows["bf16"] else None
print(f"{'run':<8} {'tokens':>8} {'NLL':>9} {'perplexity':>11} {'vs bf16':>8}")
for name, r in rows.items():
    if r is None:
        print(f"{name:<8} {'-':>8}"); continue
    d = f"{100 * (r['perplexity'] / base - 1):+.2f}%" if base else "-"
    print(f"{name:<8} {r['tokens_scored']:>8} {r['mean_nll']:>9.4f} {r['perplexity']:>11.4f} {d:>8}")
print("targets: FP8 weights within 1% of bf16, + FP8 KV within 1.5%")
PY
