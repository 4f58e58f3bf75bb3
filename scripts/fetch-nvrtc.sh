#!/usr/bin/env bash
# Fetches NVRTC 13.0 (the NVIDIA runtime compiler, from PyPI's nvidia-cuda-nvrtc wheel) into
# target/nvrtc and prints its library directory, so the CUDA kernel sources can be compiled for
# sm_90 on machines without a GPU or CUDA toolkit (plugins/cuda compile test). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/nvrtc
lib=$dir/nvidia/cu13/lib
if [ ! -e "$lib/libnvrtc.so.13" ]; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$dir.tmp" "nvidia-cuda-nvrtc==13.0.*" >&2
    (cd "$dir.tmp" && python3 -m zipfile -e ./*.whl . >&2)
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$PWD/$lib"
