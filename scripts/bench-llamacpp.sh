#!/usr/bin/env bash
# rtllm vs llama.cpp on the same GGUF, prompt length and thread count, on the CPU.
#
# Builds llama.cpp (llama-bench) from the source vendored in the llama-cpp-python sdist, in a
# temporary directory (scripts/bench/build-llamacpp.sh; nothing of llama.cpp is committed),
# builds rtllm in release, then runs REPS rounds of
#   llama-bench -p PROMPT -n GEN -t THREADS -r 1 -m MODEL
#   RTLLM_NUM_THREADS=THREADS rtllm generate --stats --ignore-eos --max-tokens GEN  (PROMPT-token prompt)
# (alternating, so load swings on a shared machine hit both; each round's 1-minute load
# average is printed) and prints prefill and decode tok/s (medians), their ratio, and rtllm's
# peak resident memory (/usr/bin/time) against GGUF size + KV cache + 20%.
#
# rtllm runs as target/release/rtllm with whatever plugins sit beside it: a CPU run does not
# open plugins that declare only GPU ops (cuda, triton: `export_plugin!(.., devices: ["cuda"])`),
# so they cost no resident memory; the warm-up run prints which plugins were loaded.
#
# Environment: MODEL (default: the built-in SmolLM2-135M-Instruct Q4_1), THREADS (2),
# PROMPT (128), GEN (64), REPS (5), KV_BYTES (rtllm's KV cache budget; default: the whole
# 32-token blocks PROMPT+GEN tokens need, from the GGUF's shape (scripts/bench/kv-bytes.py), as
# llama-bench sizes its context to the run; the engine default reserves 512 MiB), LLAMA_WORK_DIR
# (/tmp/rtllm-llamacpp), RTLLM_GEMM_QPATH (passed through: force rows/int/tiles in the
# quantized matmul).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${MODEL:-$HOME/.cache/rtllm/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${THREADS:-2}"
PROMPT="${PROMPT:-128}"
GEN="${GEN:-64}"
REPS="${REPS:-5}"
[[ -f "$MODEL" ]] || { echo "no model at $MODEL (scripts/fetch-default-model.sh fetches the default)" >&2; exit 1; }
# f32 K and V per token, and the engine's 32-token KV blocks.
KV_PER_TOKEN="$(python3 "$ROOT/scripts/bench/kv-bytes.py" "$MODEL" 4)"
KV_BLOCK_TOKENS=32
KV_BYTES="${KV_BYTES:-$(( (PROMPT + GEN + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS * KV_BLOCK_TOKENS * KV_PER_TOKEN ))}"

echo "== building llama.cpp (temporary dir) ==" >&2
LLAMA_BIN="$("$ROOT/scripts/bench/build-llamacpp.sh" | tail -n1)"

echo "== building rtllm (release) ==" >&2
(cd "$ROOT" && cargo build --release -q -p rtllm -p rtllm-gemm -p rtllm-attention -p rtllm-elementwise -p rtllm-rmsnorm)
RTLLM="$ROOT/target/release/rtllm"

OUT="$(mktemp -d /tmp/rtllm-bench.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

# llama.cpp runs as its users run it: its own OpenMP defaults (OMP_WAIT_POLICY is not set here;
# forcing passive waits cut its decode threefold). A policy set by the caller is reported.
echo "== $REPS rounds, each: llama-bench -p $PROMPT -n $GEN -t $THREADS -r 1 (OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}), then rtllm generate ($PROMPT-token prompt, $GEN tokens, RTLLM_NUM_THREADS=$THREADS) ==" >&2
# Rounds alternate the two so that the shared machine's load swings hit both alike.
LLAMA_FLAGS=()
LLAMA_NOTE=""
# "hello" then " hello" x (PROMPT-1): one token each for SmolLM2's tokenizer (checked below).
TEXT="hello$(printf ' hello%.0s' $(seq 2 "$PROMPT"))"
# One untimed run first: it builds (or checks) the engine cache entry for this configuration,
# which holds the whole GGUF in memory once and would skew the first run's time and RSS.
RTLLM_LOG=rtllm::registry=debug RTLLM_NUM_THREADS="$THREADS" "$RTLLM" generate --model "$MODEL" --ignore-eos --max-tokens 1 \
    --kv-cache-bytes "$KV_BYTES" --max-num-tokens "$PROMPT" hello >/dev/null 2>"$OUT/rtllm.warmup.err" \
    || { cat "$OUT/rtllm.warmup.err" >&2; exit 1; }
echo "rtllm plugins: $(grep -o 'loaded plugin [^ ]*' "$OUT/rtllm.warmup.err" | cut -d' ' -f3 | tr '\n' ' ')(skipped: $(grep -o 'skipping [^:]*: it declares only' "$OUT/rtllm.warmup.err" | sed 's|.*/||; s|: it.*||' | tr '\n' ' '))" >&2
for i in $(seq 1 "$REPS"); do
    cut -d' ' -f1 /proc/loadavg >"$OUT/load.$i"
    if ! "$LLAMA_BIN/llama-bench" -m "$MODEL" -p "$PROMPT" -n "$GEN" -t "$THREADS" -r 1 -o json "${LLAMA_FLAGS[@]}" \
        >"$OUT/llama.$i.json" 2>"$OUT/llama.err"; then
        [[ ${#LLAMA_FLAGS[@]} -eq 0 ]] || { cat "$OUT/llama.err" >&2; exit 1; }
        # CPUs whose OS does not enable AMX tiles die with SIGILL in llama.cpp's AMX buffer type
        # (built in by GGML_NATIVE on Sapphire Rapids); without weight repacking it is not used.
        echo "llama-bench failed (see below); retrying with --repack 0" >&2
        tail -n 3 "$OUT/llama.err" >&2 || true
        LLAMA_FLAGS=(--repack 0)
        LLAMA_NOTE=" (--repack 0: AMX/repacked buffers unusable here)"
        "$LLAMA_BIN/llama-bench" -m "$MODEL" -p "$PROMPT" -n "$GEN" -t "$THREADS" -r 1 -o json "${LLAMA_FLAGS[@]}" \
            >"$OUT/llama.$i.json" 2>"$OUT/llama.err" || { cat "$OUT/llama.err" >&2; exit 1; }
    fi
    RTLLM_LOG="${RTLLM_LOG:-info}" RTLLM_NUM_THREADS="$THREADS" /usr/bin/time -v "$RTLLM" generate --model "$MODEL" \
        --stats --ignore-eos --max-tokens "$GEN" --kv-cache-bytes "$KV_BYTES" --max-num-tokens "$PROMPT" \
        "$TEXT" >/dev/null 2>"$OUT/rtllm.$i.err" || { cat "$OUT/rtllm.$i.err" >&2; exit 1; }
done

python3 - "$OUT" "$REPS" "$MODEL" "$PROMPT" "$GEN" "$THREADS" "$LLAMA_NOTE" "$KV_PER_TOKEN" "$KV_BLOCK_TOKENS" "$KV_BYTES" <<'EOF'
import json, os, re, statistics, sys
out, reps, model, prompt, gen, threads, note = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
per_token, block_tokens, kv_bytes = int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
samples = {"pp": [], "tg": []}
for i in range(1, reps + 1):
    for r in json.load(open(os.path.join(out, f"llama.{i}.json"))):
        key = "pp" if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0 else "tg"
        samples[key] += r.get("samples_ts") or [r["avg_ts"]]
llama = {k: statistics.median(v) if v else None for k, v in samples.items()}
pp, tg, rss, ntok = [], [], [], set()
stat = re.compile(r"prompt (\d+) tokens in [\d.]+s \(([\d.]+) tok/s\) \| (\d+) tokens decoded at ([\d.]+) tok/s")
for i in range(1, reps + 1):
    text = open(os.path.join(out, f"rtllm.{i}.err")).read()
    m = stat.search(text)
    if not m:
        sys.exit(f"no --stats line in rtllm run {i}:\n{text}")
    ntok.add(int(m.group(1)))
    pp.append(float(m.group(2)))
    tg.append(float(m.group(4)))
    k = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if k:
        rss.append(int(k.group(1)) * 1024)
rt = {"pp": statistics.median(pp), "tg": statistics.median(tg)}
print(f"{'round':>5} {'load':>5} {'llama pp':>9} {'rtllm pp':>9} {'llama tg':>9} {'rtllm tg':>9}")
for i in range(reps):
    load = open(os.path.join(out, f"load.{i + 1}")).read().strip()
    print(f"{i + 1:>5} {load:>5} {samples['pp'][i]:9.1f} {pp[i]:9.1f} {samples['tg'][i]:9.1f} {tg[i]:9.1f}")
print(f"\nmodel {os.path.basename(model)}, {threads} threads, prompt {prompt} (rtllm saw {sorted(ntok)}), {gen} generated; medians of {reps}{note}")
print(f"{'':10} {'llama.cpp tok/s':>16} {'rtllm tok/s':>12} {'rtllm/llama':>12}")
for key, name in (("pp", f"prefill {prompt}"), ("tg", f"decode {gen}")):
    l, r = llama[key], rt[key]
    ratio = f"{r / l:.2f}x" if l else "n/a"
    print(f"{name:14} {l or float('nan'):12.1f} {r:12.1f} {ratio:>12}")
if rss:
    gguf = os.path.getsize(model)
    # The KV cache the engine allocated: the whole blocks that fit in KV_BYTES.
    kv = kv_bytes // (block_tokens * per_token) * block_tokens * per_token
    limit = (gguf + kv) * 1.2
    peak = statistics.median(rss)
    print(f"rtllm max RSS {peak / 2**20:.1f} MiB vs (GGUF {gguf / 2**20:.1f} MiB + KV {kv / 2**20:.1f} MiB) x 1.2 = {limit / 2**20:.1f} MiB: {'within' if peak <= limit else 'OVER'}")
EOF
