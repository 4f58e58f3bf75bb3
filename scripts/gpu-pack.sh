#!/usr/bin/env bash
# Builds the release binaries here and packs what scripts/gpu-check.sh needs on the GPU machine
# into $GPU_DIR (default .gpu/; any .gpu*/ is git-ignored; carried by the device tool): the rtllm binary, the cuda_check
# tp_check and triton_e2e checks (tests/examples), the benches, every plugin .so, stripped. The GPU machine has no cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --lib --bins
cargo build --release -p rtllm-tests --example cuda_check --example tp_check --example triton_e2e
cargo build --release -p rtllm-triton --example triton_bench
cargo build --release -p rtllm-cuda --example gemv_bench
cargo build --release -p rtllm-cuda --example attention_bench
cargo build --release -p rtllm-nccl --example nccl_bench
D=${GPU_DIR:-.gpu}
rm -rf "$D" && mkdir -p "$D/plugins"
cp target/release/rtllm target/release/examples/cuda_check "$D/"
cp target/release/examples/tp_check "$D/" && strip --strip-debug "$D/tp_check"
cp target/release/examples/triton_bench "$D/" && strip --strip-debug "$D/triton_bench"
cp target/release/examples/triton_e2e "$D/" && strip --strip-debug "$D/triton_e2e"
cp target/release/examples/gemv_bench "$D/" && strip --strip-debug "$D/gemv_bench"
cp target/release/examples/attention_bench "$D/" && strip --strip-debug "$D/attention_bench"
cp target/release/examples/nccl_bench "$D/" && strip --strip-debug "$D/nccl_bench"
for so in target/release/librtllm_*.so; do cp "$so" "$D/plugins/"; done
strip --strip-debug "$D/rtllm" "$D/cuda_check" "$D"/plugins/*.so
du -sh "$D"
ls -la "$D" "$D/plugins"
