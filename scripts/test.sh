#!/usr/bin/env bash
# The project's test command (README): fetch the default model, build every crate (the plugin
# dylibs must exist before the tests that load them), fetch NVRTC for the CUDA kernel compile
# test, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-default-model.sh >/dev/null
cargo build --workspace --all-targets
tests/python/run.sh  # the official openai client against `rtllm serve`
# NVRTC from PyPI lets the CUDA kernel sources compile for sm_90 here (no GPU needed); without
# network the compile test says why it skips.
if nvrtc_lib=$(scripts/fetch-nvrtc.sh); then
    export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    echo "warning: could not fetch NVRTC; the CUDA kernel compile test will skip" >&2
fi
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found; using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
