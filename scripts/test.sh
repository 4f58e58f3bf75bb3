#!/usr/bin/env bash
# The project's test command (README): fetch the default model, build every crate (the plugin
# dylibs must exist before the tests that load them), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-default-model.sh >/dev/null
cargo build --workspace --all-targets
tests/python/run.sh  # the official openai client against `rtllm serve`
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found; using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
