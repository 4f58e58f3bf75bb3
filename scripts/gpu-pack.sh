#!/usr/bin/env bash
# Builds the release binaries here and packs what scripts/gpu-check.sh needs on the GPU machine
# into .gpu/ (git-ignored; carried by the device tool): the rtllm binary, the cuda_check
# example, every plugin .so, stripped. The GPU machine has no cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --lib --bins
cargo build --release -p rtllm --example cuda_check
rm -rf .gpu && mkdir -p .gpu/plugins
cp target/release/rtllm target/release/examples/cuda_check .gpu/
for so in target/release/librtllm_*.so; do cp "$so" .gpu/plugins/; done
strip --strip-debug .gpu/rtllm .gpu/cuda_check .gpu/plugins/*.so
du -sh .gpu
ls -la .gpu .gpu/plugins
