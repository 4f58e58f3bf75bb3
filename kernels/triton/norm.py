"""RMSNorm kernels of rtllm's Triton plugin: `rmsnorm` and `fused_add_rmsnorm`.

One program per row of H elements. A row of at most BLOCK elements is loaded once and kept in
registers (one load round: the latency of a decode step's T = 1 launch). A longer row is walked
in chunks of BLOCK columns twice: the first pass accumulates the sum of squares in f32, the
second scales and stores; it reads back what the first pass of the same program wrote
(fused_add_rmsnorm's residual_out) after a block barrier. Either way the norm is taken of the
stored, rounded sum, as the CUDA C kernel does.
Weights may have any float dtype, independent of the activation dtype.
"""

import triton
import triton.language as tl


@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, y_ptr, H, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * H
    y_row = y_ptr + row * H
    if H <= BLOCK:
        cols = tl.arange(0, BLOCK)
        m = cols < H
        v = tl.load(x_row + cols, mask=m, other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt_rn(tl.sum(v * v, axis=0) / H + eps)
        w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(y_row + cols, (v * inv * w).to(y_ptr.dtype.element_ty), mask=m)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for c in range(0, H, BLOCK):
            cols = c + tl.arange(0, BLOCK)
            v = tl.load(x_row + cols, mask=cols < H, other=0.0).to(tl.float32)
            acc += v * v
        inv = 1.0 / tl.sqrt_rn(tl.sum(acc, axis=0) / H + eps)
        for c in range(0, H, BLOCK):
            cols = c + tl.arange(0, BLOCK)
            m = cols < H
            v = tl.load(x_row + cols, mask=m, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
            tl.store(y_row + cols, (v * inv * w).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def fused_add_rmsnorm_kernel(x_ptr, res_ptr, w_ptr, y_ptr, res_out_ptr, H, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    off = row * H
    if H <= BLOCK:
        cols = tl.arange(0, BLOCK)
        m = cols < H
        a = tl.load(x_ptr + off + cols, mask=m, other=0.0).to(tl.float32)
        b = tl.load(res_ptr + off + cols, mask=m, other=0.0).to(tl.float32)
        r = (a + b).to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptr + off + cols, r, mask=m)
        rf = r.to(tl.float32)
        inv = 1.0 / tl.sqrt_rn(tl.sum(rf * rf, axis=0) / H + eps)
        w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(y_ptr + off + cols, (rf * inv * w).to(y_ptr.dtype.element_ty), mask=m)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for c in range(0, H, BLOCK):
            cols = c + tl.arange(0, BLOCK)
            m = cols < H
            a = tl.load(x_ptr + off + cols, mask=m, other=0.0).to(tl.float32)
            b = tl.load(res_ptr + off + cols, mask=m, other=0.0).to(tl.float32)
            r = (a + b).to(res_out_ptr.dtype.element_ty)
            tl.store(res_out_ptr + off + cols, r, mask=m)
            rf = r.to(tl.float32)
            acc += rf * rf
        inv = 1.0 / tl.sqrt_rn(tl.sum(acc, axis=0) / H + eps)
        tl.debug_barrier()
        for c in range(0, H, BLOCK):
            cols = c + tl.arange(0, BLOCK)
            m = cols < H
            r = tl.load(res_out_ptr + off + cols, mask=m, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
            tl.store(y_ptr + off + cols, (r * inv * w).to(y_ptr.dtype.element_ty), mask=m)
