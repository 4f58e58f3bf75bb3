#!/usr/bin/env python3
"""Writes plugin-api/src/fp8/torch_vectors.txt: torch's float8_e4m3fn as the reference for
rtllm's E4M3 conversions (plugin-api/src/fp8.rs).

- `decode CODE BITS`: the f32 bits of every one of the 256 codes
  (`torch.tensor(code, dtype=uint8).view(float8_e4m3fn).float()`).
- `encode BITS CODE`: f32 → E4M3 the way llm-compressor / ModelOpt / vLLM quantize,
  `x.clamp(finfo.min, finfo.max).to(torch.float8_e4m3fn)` (saturating; NaN stays NaN), for:
  every code's exact value, every midpoint between neighbouring codes (a rounding tie) and the
  f32 values one ulp either side of it, values beyond ±448 and infinities, NaN, zeros, values
  under the smallest subnormal, f32 subnormals, and 2000 random log-uniform values.
  Each case is written for both signs.

Run: python3 scripts/reference/make_fp8_vectors.py   (needs torch; CI does not, the output is
committed).
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[2] / "plugin-api/src/fp8/torch_vectors.txt"
FP8 = torch.float8_e4m3fn
FMAX = torch.finfo(FP8).max


def bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def from_bits(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b))[0]


def next_up(x: float) -> float:
    return torch.nextafter(torch.tensor(x, dtype=torch.float32), torch.tensor(float("inf"))).item()


def next_down(x: float) -> float:
    return torch.nextafter(torch.tensor(x, dtype=torch.float32), torch.tensor(float("-inf"))).item()


def main() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    values = codes.view(FP8).float()
    lines = ["# torch " + torch.__version__ + " float8_e4m3fn; written by scripts/reference/make_fp8_vectors.py"]
    for c, v in zip(codes.tolist(), values.tolist()):
        b = 0x7FC00000 if v != v else bits(v)
        lines.append(f"decode {c:02x} {b:08x}")

    positive = sorted({v for v in values.tolist() if v == v and v >= 0})
    cases: list[float] = []
    cases += positive
    for lo, hi in zip(positive, positive[1:]):
        mid = (lo + hi) / 2  # exact: at most 5 significant bits
        cases += [mid, next_up(mid), next_down(mid)]
    cases += [448.5, 460.0, 464.0, 470.0, 479.9, 480.0, 500.0, 1e6, 3.0e38, float("inf")]
    cases += [2.0**-10, 2.0**-11, 1e-30, from_bits(1), from_bits(0x007FFFFF), 2.0**-126]
    gen = torch.Generator().manual_seed(0)
    exps = torch.rand(2000, generator=gen, dtype=torch.float64) * 24 - 14  # 2^-14 .. 2^10
    cases += (2.0**exps).float().tolist()
    signed = cases + [-c for c in cases]
    x = torch.tensor(signed, dtype=torch.float32)
    x = torch.cat([x, torch.tensor([float("nan")]), -torch.tensor([float("nan")])])
    q = x.clamp(torch.finfo(FP8).min, FMAX).to(FP8).view(torch.uint8)
    for xv, qv in zip(x.view(torch.int32).tolist(), q.tolist()):
        lines.append(f"encode {xv & 0xFFFFFFFF:08x} {qv:02x}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({len(lines)} lines)")


if __name__ == "__main__":
    main()
