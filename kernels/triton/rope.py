"""Rotary position embedding of rtllm's Triton plugin (`rope`).

x [T, heads*head_dim] and out like x, positions [T] i32. Grid (cdiv(T, BT), cdiv(heads, BH)):
a program walks BT tokens and rotates a [BH heads, HP pairs] tile of each with 2D loads and
stores (16-byte vectors in the aligned specialization), so the trigonometry of a (token, pair)
is computed once per thread for all the heads the thread holds, and the inverse frequencies
once per program. Pair i < rotary_dim/2 is rotated by angle = f32(position * inv_freq[i]);
neox pairs are (i, i + rotary_dim/2), interleaved pairs (2i, 2i+1) (INTERLEAVED, a constexpr:
kernels.toml compiles one entry per style); the rest of each head is copied. The inverse
frequencies follow HF transformers in f32 as plugins/elementwise/src/rope_freqs.rs and the CUDA
C kernel compute them: 1 / theta^(2i/d) with the power evaluated in f64 (exp2(e * log2 theta))
and correctly rounded divisions, then linear (scaling=1) or llama3 (scaling=2). Each stored
element depends on the loads of both elements of its pair, so out may alias x.
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def _inv_freq(p, rotary_dim, log2_theta, scaling, factor, low, high, old):
    exponent = tl.math.div_rn((2 * p).to(tl.float32), rotary_dim.to(tl.float32))
    power = libdevice.exp2(exponent.to(tl.float64) * log2_theta).to(tl.float32)
    f = tl.math.div_rn(tl.full(power.shape, 1.0, tl.float32), power)
    divided = tl.math.div_rn(f, factor)
    low_wavelen = tl.math.div_rn(old, low)
    high_wavelen = tl.math.div_rn(old, high)
    wavelen = tl.math.div_rn(tl.full(f.shape, 1.0, tl.float32), f) * 6.2831855
    scaled = tl.where(wavelen > low_wavelen, divided, f)
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    smooth = tl.math.div_rn(tl.math.div_rn(tl.full(f.shape, 1.0, tl.float32), wavelen) * old - low, high - low)
    llama3 = tl.where(medium, tl.math.div_rn((1.0 - smooth) * scaled, factor) + smooth * scaled, scaled)
    return tl.where(scaling == 1, divided, tl.where(scaling == 2, llama3, f))


@triton.jit
def _cos_sin(pos_ptr, t, inv):
    angle = tl.load(pos_ptr + t).to(tl.float32) * inv
    return libdevice.cos(angle), libdevice.sin(angle)


@triton.jit
def rope_kernel(x_ptr, pos_ptr, out_ptr, tokens, width, heads, head_dim, rotary_dim, half, theta, scaling, factor,
                low, high, old, INTERLEAVED: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr,
                HC: tl.constexpr):
    t0 = tl.program_id(0) * BT
    t_end = tl.minimum(t0 + BT, tokens)
    h = tl.program_id(1) * BH + tl.arange(0, BH)[:, None]
    hm = h < heads
    head_off = h * head_dim
    log2_theta = libdevice.log2(theta.to(tl.float64))
    for p0 in range(0, half, HP):
        p = p0 + tl.arange(0, HP)[None, :]
        inv = _inv_freq(p, rotary_dim, log2_theta, scaling, factor, low, high, old)
        if INTERLEAVED:
            # Pairs (2i, 2i+1): one contiguous [BH, 2*HP] tile, split into its even and odd columns.
            cols = 2 * p0 + tl.arange(0, 2 * HP)[None, :]
            m = hm & (cols < 2 * half)
            for t in range(t0, t_end):
                c, s = _cos_sin(pos_ptr, t, inv)
                off = t.to(tl.int64) * width + head_off + cols
                v = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
                xa, xb = tl.split(tl.reshape(v, [BH, HP, 2]))
                o = tl.reshape(tl.join(xa * c - xb * s, xb * c + xa * s), [BH, 2 * HP])
                tl.store(out_ptr + off, o.to(out_ptr.dtype.element_ty), mask=m)
        else:
            # Pairs (i, i + half): two [BH, HP] tiles.
            m = hm & (p < half)
            for t in range(t0, t_end):
                c, s = _cos_sin(pos_ptr, t, inv)
                a = t.to(tl.int64) * width + head_off + p
                xa = tl.load(x_ptr + a, mask=m, other=0.0).to(tl.float32)
                xb = tl.load(x_ptr + a + half, mask=m, other=0.0).to(tl.float32)
                tl.store(out_ptr + a, (xa * c - xb * s).to(out_ptr.dtype.element_ty), mask=m)
                tl.store(out_ptr + a + half, (xb * c + xa * s).to(out_ptr.dtype.element_ty), mask=m)
    # The unrotated tail of each head (partial rotary): copied.
    for d0 in range(2 * half, head_dim, HC):
        d = d0 + tl.arange(0, HC)[None, :]
        m = hm & (d < head_dim)
        for t in range(t0, t_end):
            off = t.to(tl.int64) * width + head_off + d
            tl.store(out_ptr + off, tl.load(x_ptr + off, mask=m), mask=m)
