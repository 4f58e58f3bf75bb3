//! Register-level dequantization for few tokens (decode's Q8_0 head, up to 47-token chunks;
//! `qdriver::path_for` picks): each 32-element weight sub-block is
//! widened to f32 in registers and multiplied with the f32 activations, so no activation is
//! quantized (results equal the dequantized reference up to f32 summation order). Per
//! sub-block the kernel forms `Σ q·x` over each 16-element half and applies the format's
//! coefficients: `a·Σ q·x + b·Σ x` (see [`Coef`]); the half sums `Σ x` come precomputed.
//! Back ends: AVX-512 (16-lane), AVX2 (8-lane) and portable Rust.

use crate::qdot::QIsa;
use crate::qformat::{Format, SoftHalf};

/// Activation rows per micro-kernel call.
pub const FR: usize = 4;
/// Weight rows walked before moving to the next activation tile.
const FC: usize = 16;

/// One block for one task: activation rows `0..rows` (f32, `ldx` apart; their per-sub-block
/// half sums `xs[r * nsub + s] = [Σ x[0..16], Σ x[16..32]]`) against weight rows `0..cols`,
/// written to `y[r * ldy + c] = dot + bias[c]` (`bias` may be null).
pub struct FBlock {
    pub x: *const f32,
    pub ldx: usize,
    pub xs: *const [f32; 2],
    pub w: *const u8,
    pub row_bytes: usize,
    pub nsub: usize,
    pub y: *mut f32,
    pub ldy: usize,
    pub bias: *const f32,
    pub rows: usize,
    pub cols: usize,
}

/// Computes one [`FBlock`].
///
/// # Safety
/// Every pointer must be valid for what the block describes; `y`'s block is the caller's alone.
pub type FBlockFn = unsafe fn(&FBlock);

/// The block function for format `F` on `isa`.
pub fn fblock_fn<F: Format>(isa: QIsa) -> FBlockFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx512Vnni => x86::block_avx512::<F>,
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx2 => x86::block_avx2::<F>,
        _ => block_portable::<F>,
    }
}

/// The half sums of one activation row (`x.len()` a multiple of 32) into `out`.
pub fn half_sums(x: &[f32], out: &mut [[f32; 2]]) {
    for (xb, o) in x.chunks_exact(32).zip(out.iter_mut()) {
        *o = [xb[..16].iter().sum(), xb[16..].iter().sum()];
    }
}

macro_rules! walk {
    ($b:expr, $row:ident, $($extra:tt)*) => {{
        let b: &FBlock = $b;
        let mut c0 = 0;
        while c0 < b.cols {
            let c1 = (c0 + FC).min(b.cols);
            let mut r = 0;
            while r < b.rows {
                let n = (b.rows - r).min(FR);
                let (x, xs) = (b.x.add(r * b.ldx), b.xs.add(r * b.nsub));
                for c in c0..c1 {
                    let w = b.w.add(c * b.row_bytes);
                    let sums: [f32; FR] = match n {
                        1 => pad($row::<F, 1 $($extra)*>(w, x, b.ldx, xs, b.nsub)),
                        2 => pad($row::<F, 2 $($extra)*>(w, x, b.ldx, xs, b.nsub)),
                        3 => pad($row::<F, 3 $($extra)*>(w, x, b.ldx, xs, b.nsub)),
                        _ => $row::<F, FR $($extra)*>(w, x, b.ldx, xs, b.nsub),
                    };
                    let bias = if b.bias.is_null() { 0.0 } else { *b.bias.add(c) };
                    for (i, s) in sums.iter().enumerate().take(n) {
                        *b.y.add((r + i) * b.ldy + c) = s + bias;
                    }
                }
                r += n;
            }
            c0 = c1;
        }
    }};
}

#[inline(always)]
fn pad<const R: usize>(v: [f32; R]) -> [f32; FR] {
    let mut out = [0.0; FR];
    out[..R].copy_from_slice(&v);
    out
}

/// # Safety
/// As [`FBlockFn`].
unsafe fn block_portable<F: Format>(b: &FBlock) {
    walk!(b, row_portable,)
}

#[inline(always)]
unsafe fn row_portable<F: Format, const R: usize>(
    w: *const u8,
    x: *const f32,
    ldx: usize,
    xs: *const [f32; 2],
    nsub: usize,
) -> [f32; R] {
    let subs = F::BLOCK / 32;
    let mut out = [0f32; R];
    let mut ints = [0u8; 32];
    for s in 0..nsub {
        let blk = w.add(s / subs * F::BYTES);
        let j = s % subs;
        F::unpack(blk, j, &mut ints);
        let c = F::coef::<SoftHalf>(blk, j);
        let q = ints.map(|v| if F::SIGNED { v as i8 as f32 } else { v as f32 });
        for (r, o) in out.iter_mut().enumerate() {
            let xr = x.add(r * ldx + 32 * s);
            let (mut lo, mut hi) = (0f32, 0f32);
            for l in 0..16 {
                lo += q[l] * *xr.add(l);
                hi += q[l + 16] * *xr.add(l + 16);
            }
            let [slo, shi] = *xs.add(r * nsub + s);
            *o += c.a[0] * lo + c.a[1] * hi + c.b[0] * slo + c.b[1] * shi;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{pad, FBlock, FC, FR};
    use crate::qformat::{F16c, Format};
    use std::arch::x86_64::*;

    /// How far ahead of the current weight block to prefetch.
    const PREFETCH_BYTES: usize = 4096;

    /// # Safety
    /// As [`super::FBlockFn`]; the CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn block_avx512<F: Format>(b: &FBlock) {
        walk!(b, row512,)
    }

    /// # Safety
    /// As [`super::FBlockFn`]; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_avx2<F: Format>(b: &FBlock) {
        walk!(b, row256,)
    }

    /// 16 bytes → 16 f32 (unsigned, or signed for `SIGNED` formats).
    #[inline(always)]
    unsafe fn widen16<F: Format>(v: __m128i) -> __m512 {
        if F::SIGNED {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
        } else {
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v))
        }
    }

    /// 8 bytes (the low half of `v`) → 8 f32.
    #[inline(always)]
    unsafe fn widen8<F: Format>(v: __m128i) -> __m256 {
        if F::SIGNED {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
        } else {
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
        }
    }

    #[inline(always)]
    unsafe fn hsum512(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }

    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// The 32 weights of sub-block `j` as two 16-lane f32 vectors.
    #[inline(always)]
    unsafe fn weights512<F: Format>(blk: *const u8, j: usize) -> (__m512, __m512) {
        if let Some(at) = F::NIBBLES_AT {
            // Split the nibbles in 128-bit registers (any vector port), widen each half once.
            let v = _mm_loadu_si128(blk.add(at) as *const __m128i);
            let m = _mm_set1_epi8(0x0f);
            let (lo, hi) = (_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16::<4>(v), m));
            (_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)))
        } else {
            let q = F::unpack_avx2(blk, j);
            (widen16::<F>(_mm256_castsi256_si128(q)), widen16::<F>(_mm256_extracti128_si256::<1>(q)))
        }
    }

    /// Sub-block `s` of one weight row against `R` rows, into `acc` and `off`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn step512<F: Format, const R: usize>(
        w: *const u8,
        x: *const f32,
        ldx: usize,
        xs: *const [f32; 2],
        nsub: usize,
        s: usize,
        acc: &mut [__m512; R],
        off: &mut [f32; R],
    ) {
        let subs = F::BLOCK / 32;
        let blk = w.add(s / subs * F::BYTES);
        let j = s % subs;
        if j == 0 {
            // Decode streams the weights once: ask for them well ahead of use.
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH_BYTES) as *const i8);
        }
        let (q0, q1) = weights512::<F>(blk, j);
        let c = F::coef::<F16c>(blk, j);
        for r in 0..R {
            let xr = x.add(r * ldx + 32 * s);
            let x0 = _mm512_loadu_ps(xr);
            let x1 = _mm512_loadu_ps(xr.add(16));
            let [slo, shi] = *xs.add(r * nsub + s);
            if F::UNIFORM {
                let t = _mm512_fmadd_ps(q1, x1, _mm512_mul_ps(q0, x0));
                acc[r] = _mm512_fmadd_ps(t, _mm512_set1_ps(c.a[0]), acc[r]);
                if !F::SIGNED {
                    off[r] += c.b[0] * (slo + shi);
                }
            } else {
                acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(q0, x0), _mm512_set1_ps(c.a[0]), acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(q1, x1), _mm512_set1_ps(c.a[1]), acc[r]);
                off[r] += c.b[0] * slo + c.b[1] * shi;
            }
        }
    }

    /// `R` rows · one weight row, 16 lanes: each half of a sub-block is one register; even
    /// and odd sub-blocks accumulate apart (two dependency chains per row).
    #[inline(always)]
    unsafe fn row512<F: Format, const R: usize>(
        w: *const u8,
        x: *const f32,
        ldx: usize,
        xs: *const [f32; 2],
        nsub: usize,
    ) -> [f32; R] {
        let mut even = [_mm512_setzero_ps(); R];
        let mut odd = [_mm512_setzero_ps(); R];
        // The scalar offsets too: one chain would cost an add's latency per sub-block.
        let mut off_even = [0f32; R];
        let mut off_odd = [0f32; R];
        let mut s = 0;
        while s + 2 <= nsub {
            step512::<F, R>(w, x, ldx, xs, nsub, s, &mut even, &mut off_even);
            step512::<F, R>(w, x, ldx, xs, nsub, s + 1, &mut odd, &mut off_odd);
            s += 2;
        }
        if s < nsub {
            step512::<F, R>(w, x, ldx, xs, nsub, s, &mut even, &mut off_even);
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum512(_mm512_add_ps(even[r], odd[r])) + (off_even[r] + off_odd[r]);
        }
        out
    }

    /// `R` rows · one weight row, 8 lanes.
    #[inline(always)]
    unsafe fn row256<F: Format, const R: usize>(
        w: *const u8,
        x: *const f32,
        ldx: usize,
        xs: *const [f32; 2],
        nsub: usize,
    ) -> [f32; R] {
        let subs = F::BLOCK / 32;
        let mut acc = [_mm256_setzero_ps(); R];
        let mut off = [0f32; R];
        for s in 0..nsub {
            let blk = w.add(s / subs * F::BYTES);
            let j = s % subs;
            let q = F::unpack_avx2(blk, j);
            let c = F::coef::<F16c>(blk, j);
            let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            let qs = [
                widen8::<F>(lo),
                widen8::<F>(_mm_unpackhi_epi64(lo, lo)),
                widen8::<F>(hi),
                widen8::<F>(_mm_unpackhi_epi64(hi, hi)),
            ];
            for r in 0..R {
                let xr = x.add(r * ldx + 32 * s);
                let t0 = _mm256_fmadd_ps(qs[1], _mm256_loadu_ps(xr.add(8)), _mm256_mul_ps(qs[0], _mm256_loadu_ps(xr)));
                let t1 = _mm256_fmadd_ps(
                    qs[3],
                    _mm256_loadu_ps(xr.add(24)),
                    _mm256_mul_ps(qs[2], _mm256_loadu_ps(xr.add(16))),
                );
                let [slo, shi] = *xs.add(r * nsub + s);
                acc[r] = _mm256_fmadd_ps(t0, _mm256_set1_ps(c.a[0]), acc[r]);
                acc[r] = _mm256_fmadd_ps(t1, _mm256_set1_ps(c.a[1]), acc[r]);
                if !F::SIGNED {
                    off[r] += c.b[0] * slo + c.b[1] * shi;
                }
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum256(acc[r]) + off[r];
        }
        out
    }
}
