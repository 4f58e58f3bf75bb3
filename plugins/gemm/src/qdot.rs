//! Quantized dot-product micro-kernels: rows of quantized activations ([`ActBlock`]s) against
//! rows of GGUF weight blocks, integer products per 32-element sub-block (two byte products:
//! the activations' coarse and residual bytes, see `qact`), scaled and summed in f32. Three back ends, chosen once per kernel instance ([`QIsa`]): AVX-512 VNNI
//! (`vpdpbusd` on 256-bit registers), AVX2 (`vpmaddubsw` + `vpmaddwd`), and portable Rust.
//! Signed Q8_0 weights use ggml's sign trick (`|w|` · `sign(q, w)`) so the unsigned×signed
//! instructions apply.

use crate::qact::ActBlock;
use crate::qformat::{Format, SoftHalf};

/// The instruction set the quantized kernels run on, detected once at kernel creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QIsa {
    /// AVX-512 F/BW/VL + VNNI (with AVX2, FMA, F16C).
    Avx512Vnni,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Any CPU.
    Portable,
}

impl QIsa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> QIsa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                return QIsa::Avx512Vnni;
            }
            if avx2 {
                return QIsa::Avx2;
            }
        }
        QIsa::Portable
    }

    /// Whether this CPU can run code for `self`.
    pub fn is_supported(self) -> bool {
        match (self, QIsa::detect()) {
            (QIsa::Portable, _) => true,
            (QIsa::Avx2, found) => found != QIsa::Portable,
            (QIsa::Avx512Vnni, found) => found == QIsa::Avx512Vnni,
        }
    }

    /// Whether the AVX2 activation quantizer may run.
    pub fn has_avx2(self) -> bool {
        self != QIsa::Portable
    }
}

/// Activation rows per micro-kernel call (each unpacked weight sub-block serves this many).
pub const QR: usize = 4;
/// Weight rows a block walks before moving to the next activation tile (they stay in L1).
const QC: usize = 16;

/// One block of the product for one task: activation rows `0..rows` (each `lda` blocks apart,
/// `nsub` blocks long) against weight rows `0..cols` (each `row_bytes` apart), written to
/// `y[r * ldy + c] = dot + bias[c]` (`bias` may be null).
pub struct QBlock {
    pub acts: *const ActBlock,
    pub lda: usize,
    pub w: *const u8,
    pub row_bytes: usize,
    pub nsub: usize,
    pub y: *mut f32,
    pub ldy: usize,
    pub bias: *const f32,
    pub rows: usize,
    pub cols: usize,
}

/// Computes one [`QBlock`].
///
/// # Safety
/// Every pointer must be valid for the rows, columns and blocks described; `y`'s block must be
/// written by no one else during the call.
pub type QBlockFn = unsafe fn(&QBlock);

/// The block function for format `F` on `isa`.
pub fn qblock_fn<F: Format>(isa: QIsa) -> QBlockFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx512Vnni => x86::block_vnni::<F>,
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx2 => x86::block_avx2::<F>,
        _ => block_portable::<F>,
    }
}

/// Walks the block in QC-column chunks × QR-row tiles and calls `kernel` for each tile row set.
#[inline(always)]
unsafe fn walk(b: &QBlock, mut kernel: impl FnMut(*const u8, *const ActBlock, usize) -> [f32; QR]) {
    let mut c0 = 0;
    while c0 < b.cols {
        let c1 = (c0 + QC).min(b.cols);
        let mut r = 0;
        while r < b.rows {
            let n = (b.rows - r).min(QR);
            for c in c0..c1 {
                let sums = kernel(b.w.add(c * b.row_bytes), b.acts.add(r * b.lda), n);
                let bias = if b.bias.is_null() { 0.0 } else { *b.bias.add(c) };
                for (i, s) in sums.iter().enumerate().take(n) {
                    *b.y.add((r + i) * b.ldy + c) = s + bias;
                }
            }
            r += n;
        }
        c0 = c1;
    }
}

/// # Safety
/// As [`QBlockFn`].
unsafe fn block_portable<F: Format>(b: &QBlock) {
    walk(b, |w, a, n| match n {
        1 => widen(row_portable::<F, 1>(w, a, b.lda, b.nsub)),
        2 => widen(row_portable::<F, 2>(w, a, b.lda, b.nsub)),
        3 => widen(row_portable::<F, 3>(w, a, b.lda, b.nsub)),
        _ => row_portable::<F, QR>(w, a, b.lda, b.nsub),
    })
}

#[inline(always)]
fn widen<const R: usize>(v: [f32; R]) -> [f32; QR] {
    let mut out = [0.0; QR];
    out[..R].copy_from_slice(&v);
    out
}

/// `R` activation rows · one weight row, in plain Rust.
#[inline(always)]
unsafe fn row_portable<F: Format, const R: usize>(
    w: *const u8,
    a: *const ActBlock,
    lda: usize,
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
        for (r, o) in out.iter_mut().enumerate() {
            let ab = &*a.add(r * lda + s);
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..16 {
                let (wl, wh) = if F::SIGNED {
                    (ints[l] as i8 as i32, ints[l + 16] as i8 as i32)
                } else {
                    (ints[l] as i32, ints[l + 16] as i32)
                };
                lo += wl * ab.level(l);
                hi += wh * ab.level(l + 16);
            }
            *o += ab.d * (c.a[0] * lo as f32 + c.a[1] * hi as f32) + c.b[0] * ab.s_lo + c.b[1] * (ab.s - ab.s_lo);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{walk, widen, QBlock};
    use crate::qact::ActBlock;
    use crate::qformat::{F16c, Format};
    use std::arch::x86_64::*;

    /// # Safety
    /// As [`super::QBlockFn`]; the CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn block_vnni<F: Format>(b: &QBlock) {
        walk(b, |w, a, n| match n {
            1 => widen(row::<F, 1, true>(w, a, b.lda, b.nsub)),
            2 => widen(row::<F, 2, true>(w, a, b.lda, b.nsub)),
            3 => widen(row::<F, 3, true>(w, a, b.lda, b.nsub)),
            _ => row::<F, { super::QR }, true>(w, a, b.lda, b.nsub),
        })
    }

    /// # Safety
    /// As [`super::QBlockFn`]; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_avx2<F: Format>(b: &QBlock) {
        walk(b, |w, a, n| match n {
            1 => widen(row::<F, 1, false>(w, a, b.lda, b.nsub)),
            2 => widen(row::<F, 2, false>(w, a, b.lda, b.nsub)),
            3 => widen(row::<F, 3, false>(w, a, b.lda, b.nsub)),
            _ => row::<F, { super::QR }, false>(w, a, b.lda, b.nsub),
        })
    }

    /// Eight i32 lanes, lane i = Σ over bytes 4i..4i+4 of `u · (128·q + r)` (u unsigned, q
    /// and r signed): the coarse product shifted up, then the residual's added on.
    #[inline(always)]
    unsafe fn dot32<const VNNI: bool>(u: __m256i, q: __m256i, r: __m256i) -> __m256i {
        if VNNI {
            let coarse = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q);
            _mm256_dpbusd_epi32(_mm256_slli_epi32::<7>(coarse), u, r)
        } else {
            let ones = _mm256_set1_epi16(1);
            let coarse = _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), ones);
            _mm256_add_epi32(_mm256_slli_epi32::<7>(coarse), _mm256_madd_epi16(_mm256_maddubs_epi16(u, r), ones))
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// How far ahead of the current weight block to prefetch (decode streams the weights once).
    const PREFETCH_BYTES: usize = 4096;

    /// Sub-block `s` of one weight row against `R` activation rows, into `acc` and `off`.
    #[inline(always)]
    unsafe fn step<F: Format, const R: usize, const VNNI: bool>(
        w: *const u8,
        rows: &[*const ActBlock; R],
        s: usize,
        acc: &mut [__m256; R],
        off: &mut [f32; R],
    ) {
        let subs = F::BLOCK / 32;
        let blk = w.add(s / subs * F::BYTES);
        let j = s % subs;
        if j == 0 {
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH_BYTES) as *const i8);
        }
        let wv = F::unpack_avx2(blk, j);
        let c = F::coef::<F16c>(blk, j);
        let wu = if F::SIGNED { _mm256_sign_epi8(wv, wv) } else { wv };
        for r in 0..R {
            let ab = &*rows[r].add(s);
            let q = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
            let rr = _mm256_loadu_si256(ab.qr.as_ptr() as *const __m256i);
            let (q, rr) = if F::SIGNED { (_mm256_sign_epi8(q, wv), _mm256_sign_epi8(rr, wv)) } else { (q, rr) };
            let dot = _mm256_cvtepi32_ps(dot32::<VNNI>(wu, q, rr));
            if F::UNIFORM {
                acc[r] = _mm256_fmadd_ps(dot, _mm256_set1_ps(c.a[0] * ab.d), acc[r]);
                if !F::SIGNED {
                    off[r] += c.b[0] * ab.s;
                }
            } else {
                let scale = _mm256_set_m128(_mm_set1_ps(c.a[1] * ab.d), _mm_set1_ps(c.a[0] * ab.d));
                acc[r] = _mm256_fmadd_ps(dot, scale, acc[r]);
                off[r] += c.b[0] * ab.s_lo + c.b[1] * (ab.s - ab.s_lo);
            }
        }
    }

    /// `R` activation rows · one weight row; even and odd sub-blocks accumulate apart (two
    /// dependency chains per row, vector and scalar).
    #[inline(always)]
    unsafe fn row<F: Format, const R: usize, const VNNI: bool>(
        w: *const u8,
        a: *const ActBlock,
        lda: usize,
        nsub: usize,
    ) -> [f32; R] {
        let mut even = [_mm256_setzero_ps(); R];
        let mut odd = [_mm256_setzero_ps(); R];
        let mut off_even = [0f32; R];
        let mut off_odd = [0f32; R];
        let mut rows = [a; R];
        for r in 1..R {
            rows[r] = rows[r - 1].add(lda);
        }
        let mut s = 0;
        while s + 2 <= nsub {
            step::<F, R, VNNI>(w, &rows, s, &mut even, &mut off_even);
            step::<F, R, VNNI>(w, &rows, s + 1, &mut odd, &mut off_odd);
            s += 2;
        }
        if s < nsub {
            step::<F, R, VNNI>(w, &rows, s, &mut even, &mut off_even);
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(_mm256_add_ps(even[r], odd[r])) + (off_even[r] + off_odd[r]);
        }
        out
    }
}
