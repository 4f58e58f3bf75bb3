#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-cli from source in a temporary directory, from the
# llama.cpp tree vendored in the llama-cpp-python sdist on PyPI. Nothing lands in the repo.
#
# Usage: scripts/bench/build-llamacpp.sh [WORK_DIR]   (default /tmp/rtllm-llamacpp)
# Prints the directory holding the built binaries on its last line. Reuses a finished build.
set -euo pipefail

WORK="${1:-${LLAMA_WORK_DIR:-/tmp/rtllm-llamacpp}}"
mkdir -p "$WORK"
BIN="$WORK/build/bin"
if [[ -x "$BIN/llama-bench" ]]; then
    echo "$BIN"
    exit 0
fi

PY="${PYTHON:-python3}"
cd "$WORK"
if ! ls llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    echo "downloading the llama-cpp-python sdist into $WORK" >&2
    # Only llama-cpp-python itself comes as source; its build backend may use wheels.
    "$PY" -m pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d "$WORK" >&2
fi
SDIST="$(ls llama_cpp_python-*.tar.gz | head -n1)"
if [[ ! -d src ]]; then
    mkdir -p src
    tar -xzf "$SDIST" -C src --strip-components=1
fi
SRC="$WORK/src/vendor/llama.cpp"
[[ -f "$SRC/CMakeLists.txt" ]] || { echo "no llama.cpp tree at $SRC" >&2; exit 1; }

if ! command -v cmake >/dev/null 2>&1; then
    echo "installing cmake with pip" >&2
    "$PY" -m pip install -q cmake >&2
    hash -r
fi

JOBS="${JOBS:-$(nproc)}"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$WORK/build" --config Release -j "$JOBS" --target llama-bench >&2
# llama-cli is only a convenience for trying the model by hand; some versions name it differently.
cmake --build "$WORK/build" --config Release -j "$JOBS" --target llama-cli >&2 || echo "(llama-cli not built)" >&2
echo "$BIN"
