"""Elementwise kernels of rtllm's Triton plugin: `add` and `silu_mul`.

f32 arithmetic whatever the storage dtype; the output is rounded to the output tensor's dtype.
silu is written as torch's CPU kernel writes it, x / (1 + exp(-x)).
"""

import triton
import triton.language as tl


@triton.jit
def add_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    a = tl.load(a_ptr + offs, mask=m).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=m).to(tl.float32)
    tl.store(out_ptr + offs, (a + b).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def silu_mul_kernel(gate_ptr, up_ptr, out_ptr, width, in_stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < width
    g = tl.load(gate_ptr + row * in_stride + cols, mask=m).to(tl.float32)
    u = tl.load(up_ptr + row * in_stride + cols, mask=m).to(tl.float32)
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(out_ptr + row * width + cols, y.to(out_ptr.dtype.element_ty), mask=m)
