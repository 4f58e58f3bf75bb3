"""Rotary position embedding of rtllm's Triton plugin (`rope`).

x [T, heads*head_dim] and out like x, positions [T] i32. Grid (cdiv(T, BT), cdiv(heads, BH)):
a program rotates BT tokens x BH heads x HP pairs as [BT, BH, HP] tiles (16-byte vectors in
the aligned specialization), all loads in flight at once, so the trigonometry of a (token,
pair) is computed once per thread for all the heads the thread holds. Pair i < rotary_dim/2 is rotated by angle = f32(position * inv_freq[i]);
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
def rope_kernel(x_ptr, pos_ptr, out_ptr, tokens, width, heads, head_dim, rotary_dim, half, theta, scaling, factor,
                low, high, old, INTERLEAVED: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr, HP: tl.constexpr,
                HC: tl.constexpr):
    # Tiles are [BT tokens, BH heads, columns]: Triton puts the threads along the columns, then
    # the tokens, and the warps along the heads (checked in the PTX: 8 sinf/cosf a thread for
    # bf16), so a thread holds BH / num_warps heads of one token and computes the cos/sin of its
    # columns once for all of them. Every load of the tile is issued at once.
    t = tl.program_id(0) * BT + tl.arange(0, BT)[:, None, None]
    h = tl.program_id(1) * BH + tl.arange(0, BH)[None, :, None]
    hm = (h < heads) & (t < tokens)
    pos = tl.load(pos_ptr + t, mask=t < tokens, other=0).to(tl.float32)
    base = t.to(tl.int64) * width + h * head_dim
    log2_theta = libdevice.log2(theta.to(tl.float64))
    for p0 in range(0, half, HP):
        p = p0 + tl.arange(0, HP)[None, None, :]
        angle = pos * _inv_freq(p, rotary_dim, log2_theta, scaling, factor, low, high, old)
        c = libdevice.cos(angle)
        s = libdevice.sin(angle)
        if INTERLEAVED:
            # Pairs (2i, 2i+1): one contiguous tile of 2*HP columns, split into even and odd.
            cols = 2 * p0 + tl.arange(0, 2 * HP)[None, None, :]
            m = hm & (cols < 2 * half)
            v = tl.load(x_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
            xa, xb = tl.split(tl.reshape(v, [BT, BH, HP, 2]))
            o = tl.reshape(tl.join(xa * c - xb * s, xb * c + xa * s), [BT, BH, 2 * HP])
            tl.store(out_ptr + base + cols, o.to(out_ptr.dtype.element_ty), mask=m)
        else:
            # Pairs (i, i + half): two tiles of HP columns.
            m = hm & (p < half)
            a = base + p
            xa = tl.load(x_ptr + a, mask=m, other=0.0).to(tl.float32)
            xb = tl.load(x_ptr + a + half, mask=m, other=0.0).to(tl.float32)
            tl.store(out_ptr + a, (xa * c - xb * s).to(out_ptr.dtype.element_ty), mask=m)
            tl.store(out_ptr + a + half, (xb * c + xa * s).to(out_ptr.dtype.element_ty), mask=m)
    # The unrotated tail of each head (partial rotary): copied.
    for d0 in range(2 * half, head_dim, HC):
        d = d0 + tl.arange(0, HC)[None, None, :]
        m = hm & (d < head_dim)
        tl.store(out_ptr + base + d, tl.load(x_ptr + base + d, mask=m), mask=m)
