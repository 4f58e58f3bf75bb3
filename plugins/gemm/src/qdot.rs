//! Quantized dot-product kernels: rows of quantized activations ([`ActBlock`]s) against rows
//! of GGUF weight blocks. The numbers are defined once, for every back end and batch size:
//! for output (r, c), per 32-element sub-block s in order, the exact integer dot products
//! `I_lo`, `I_hi` of the weight integers with the activation levels (elements 0..16, 16..32)
//! enter one f32 chain (see [`Chain`]):
//! `acc = fma(I, a·d, acc)` (`I = I_lo + I_hi` when the format's sub-block has one scale, else
//! one step per half) and `off = fma(b, Σx, off)`; then `y = (acc + off) + bias`.
//! Integer sums are exact in any order, so the kernels may block rows and columns as they
//! like: a row's output is bit-identical whatever rows share the launch, however the columns
//! are split over tasks, and on every instruction set (portable, AVX2, AVX-512 VNNI).
//!
//! This file holds the instruction-set choice, the chain, the portable kernel and the SIMD
//! kernel for any row count (eight weight columns at a time, integer partial sums folded to
//! one lane per column); `qpanel` holds the VNNI kernel for many rows.

use crate::qact::ActBlock;
use crate::qformat::{Coef, Format, SoftHalf};

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

/// Activation rows per kernel pass (each unpacked weight sub-block serves this many).
pub const QR: usize = 4;
/// Weight columns per SIMD group: one f32 lane each.
pub const GC: usize = 8;

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

/// Whether the format has an offset term (`b ≠ 0`; all but Q8_0).
#[inline(always)]
pub const fn has_offset<F: Format>() -> bool {
    !F::SIGNED
}

/// The f32 chain of one output, in scalar form (the SIMD kernels run the same operations
/// lane by lane).
#[derive(Clone, Copy, Default)]
pub struct Chain {
    acc: f32,
    off: f32,
}

impl Chain {
    /// One sub-block: exact integer dots over its halves, its coefficients, its activations.
    #[inline(always)]
    pub fn step<F: Format>(&mut self, lo: i32, hi: i32, c: &Coef, ab: &ActBlock) {
        if F::UNIFORM {
            self.acc = ((lo + hi) as f32).mul_add(c.a[0] * ab.d, self.acc);
            if has_offset::<F>() {
                self.off = c.b[0].mul_add(ab.s, self.off);
            }
        } else {
            self.acc = (lo as f32).mul_add(c.a[0] * ab.d, self.acc);
            self.acc = (hi as f32).mul_add(c.a[1] * ab.d, self.acc);
            self.off = c.b[0].mul_add(ab.s_lo, self.off);
            self.off = c.b[1].mul_add(ab.s - ab.s_lo, self.off);
        }
    }

    /// The output: `(acc + off) + bias`.
    #[inline(always)]
    pub fn finish(self, bias: Option<f32>) -> f32 {
        let y = self.acc + self.off;
        match bias {
            Some(b) => y + b,
            None => y,
        }
    }
}

/// # Safety
/// As [`QBlockFn`].
unsafe fn block_portable<F: Format>(b: &QBlock) {
    let subs = F::BLOCK / 32;
    let mut ints = [0u8; 32];
    let mut r0 = 0;
    while r0 < b.rows {
        let n = (b.rows - r0).min(QR);
        for c in 0..b.cols {
            let w = b.w.add(c * b.row_bytes);
            let mut chains = [Chain::default(); QR];
            for s in 0..b.nsub {
                let blk = w.add(s / subs * F::BYTES);
                F::unpack(blk, s % subs, &mut ints);
                let coef = F::coef::<SoftHalf>(blk, s % subs);
                let wi = |l: usize| if F::SIGNED { ints[l] as i8 as i32 } else { ints[l] as i32 };
                for (r, chain) in chains.iter_mut().enumerate().take(n) {
                    let ab = &*b.acts.add((r0 + r) * b.lda + s);
                    let lo: i32 = (0..16).map(|l| wi(l) * ab.level(l)).sum();
                    let hi: i32 = (16..32).map(|l| wi(l) * ab.level(l)).sum();
                    chain.step::<F>(lo, hi, &coef, ab);
                }
            }
            let bias = (!b.bias.is_null()).then(|| *b.bias.add(c));
            for (r, chain) in chains.iter().enumerate().take(n) {
                *b.y.add((r0 + r) * b.ldy + c) = chain.finish(bias);
            }
        }
        r0 += n;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{has_offset, QBlock, GC, QR};
    use crate::qact::ActBlock;
    use crate::qformat::{F16c, Format};
    use std::arch::x86_64::*;

    /// # Safety
    /// As [`super::QBlockFn`]; the CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn block_vnni<F: Format>(b: &QBlock) {
        walk::<F, true>(b)
    }

    /// # Safety
    /// As [`super::QBlockFn`]; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_avx2<F: Format>(b: &QBlock) {
        walk::<F, false>(b)
    }

    /// Row tiles of up to [`QR`] × column groups of [`GC`].
    #[inline(always)]
    unsafe fn walk<F: Format, const VNNI: bool>(b: &QBlock) {
        let mut c0 = 0;
        while c0 < b.cols {
            let ncols = (b.cols - c0).min(GC);
            let mut r = 0;
            while r < b.rows {
                let n = (b.rows - r).min(QR);
                match n {
                    1 => group::<F, 1, VNNI>(b, r, c0, ncols),
                    2 => group::<F, 2, VNNI>(b, r, c0, ncols),
                    3 => group::<F, 3, VNNI>(b, r, c0, ncols),
                    _ => group::<F, QR, VNNI>(b, r, c0, ncols),
                }
                r += n;
            }
            c0 += ncols;
        }
    }

    /// Eight i32 lanes, lane i = Σ over bytes 4i..4i+4 of `u · (128·q + r)` (u unsigned, q
    /// and r signed): the coarse product shifted up, then the residual's added on.
    #[inline(always)]
    pub(crate) unsafe fn dot32<const VNNI: bool>(u: __m256i, q: __m256i, r: __m256i) -> __m256i {
        if VNNI {
            let coarse = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q);
            _mm256_dpbusd_epi32(_mm256_slli_epi32::<7>(coarse), u, r)
        } else {
            let ones = _mm256_set1_epi16(1);
            let coarse = _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), ones);
            _mm256_add_epi32(_mm256_slli_epi32::<7>(coarse), _mm256_madd_epi16(_mm256_maddubs_epi16(u, r), ones))
        }
    }

    /// Eight columns' partial sums (lanes 0..4 elements 0..16, lanes 4..8 elements 16..32) to
    /// their totals over each half, one lane per column: (lo, hi).
    #[inline(always)]
    unsafe fn fold8(p: &[__m256i; GC]) -> (__m256i, __m256i) {
        let h01 = _mm256_hadd_epi32(p[0], p[1]);
        let h23 = _mm256_hadd_epi32(p[2], p[3]);
        let h45 = _mm256_hadd_epi32(p[4], p[5]);
        let h67 = _mm256_hadd_epi32(p[6], p[7]);
        let q0 = _mm256_hadd_epi32(h01, h23);
        let q1 = _mm256_hadd_epi32(h45, h67);
        (_mm256_permute2x128_si256::<0x20>(q0, q1), _mm256_permute2x128_si256::<0x31>(q0, q1))
    }

    /// The f32 chains of `R` rows × eight columns, lane by lane as [`super::Chain`].
    pub(crate) struct Chains<const R: usize> {
        acc: [__m256; R],
        off: [__m256; R],
    }

    /// The coefficients of eight columns' sub-blocks, one lane per column.
    pub(crate) struct Coefs {
        pub a: [__m256; 2],
        pub b: [__m256; 2],
    }

    impl<const R: usize> Chains<R> {
        #[inline(always)]
        pub unsafe fn new() -> Self {
            Chains { acc: [_mm256_setzero_ps(); R], off: [_mm256_setzero_ps(); R] }
        }

        /// Row `r`'s step for one sub-block: exact integer dots per column (halves), the
        /// columns' coefficients and the row's activation block.
        #[inline(always)]
        pub unsafe fn step<F: Format>(&mut self, r: usize, lo: __m256i, hi: __m256i, c: &Coefs, ab: &ActBlock) {
            let d = _mm256_set1_ps(ab.d);
            if F::UNIFORM {
                let i = _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi));
                self.acc[r] = _mm256_fmadd_ps(i, _mm256_mul_ps(c.a[0], d), self.acc[r]);
                if has_offset::<F>() {
                    self.off[r] = _mm256_fmadd_ps(c.b[0], _mm256_set1_ps(ab.s), self.off[r]);
                }
            } else {
                self.acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(c.a[0], d), self.acc[r]);
                self.acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(c.a[1], d), self.acc[r]);
                self.off[r] = _mm256_fmadd_ps(c.b[0], _mm256_set1_ps(ab.s_lo), self.off[r]);
                self.off[r] = _mm256_fmadd_ps(c.b[1], _mm256_set1_ps(ab.s - ab.s_lo), self.off[r]);
            }
        }

        /// Writes rows `r0..r0+R`, columns `c0..c0+ncols` of `b.y`: `(acc + off) + bias`.
        #[inline(always)]
        pub unsafe fn store(&self, b: &QBlock, r0: usize, c0: usize, ncols: usize) {
            let mut bias = [0f32; GC];
            if !b.bias.is_null() {
                std::ptr::copy_nonoverlapping(b.bias.add(c0), bias.as_mut_ptr(), ncols);
            }
            let bias = _mm256_loadu_ps(bias.as_ptr());
            for r in 0..R {
                let mut y = _mm256_add_ps(self.acc[r], self.off[r]);
                if !b.bias.is_null() {
                    y = _mm256_add_ps(y, bias);
                }
                let out = b.y.add((r0 + r) * b.ldy + c0);
                if ncols == GC {
                    _mm256_storeu_ps(out, y);
                } else {
                    let mut lanes = [0f32; GC];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), y);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), out, ncols);
                }
            }
        }
    }

    /// The coefficients of sub-block `j` of the blocks at `blk[0..GC]`.
    #[inline(always)]
    pub(crate) unsafe fn coefs<F: Format>(blk: &[*const u8; GC], j: usize) -> Coefs {
        let mut v = [[0f32; GC]; 4];
        for (col, &p) in blk.iter().enumerate() {
            let c = F::coef::<F16c>(p, j);
            v[0][col] = c.a[0];
            v[1][col] = c.a[1];
            v[2][col] = c.b[0];
            v[3][col] = c.b[1];
        }
        let l = |i: usize| _mm256_loadu_ps(v[i].as_ptr());
        Coefs { a: [l(0), l(1)], b: [l(2), l(3)] }
    }

    /// How far ahead of the current weight block to prefetch (decode streams the weights once).
    const PREFETCH_BYTES: usize = 1024;

    /// Rows `r0..r0+R` × columns `c0..c0+ncols` (`ncols ≤ GC`; missing columns repeat the last
    /// one and are not stored).
    #[inline(always)]
    unsafe fn group<F: Format, const R: usize, const VNNI: bool>(b: &QBlock, r0: usize, c0: usize, ncols: usize) {
        let subs = F::BLOCK / 32;
        let rows: [*const ActBlock; R] = std::array::from_fn(|r| b.acts.add((r0 + r) * b.lda));
        let wrow: [*const u8; GC] = std::array::from_fn(|j| b.w.add((c0 + j.min(ncols - 1)) * b.row_bytes));
        let mut chains = Chains::<R>::new();
        for s in 0..b.nsub {
            let (blk_off, j) = (s / subs * F::BYTES, s % subs);
            let blk: [*const u8; GC] = std::array::from_fn(|c| wrow[c].add(blk_off));
            if j == 0 {
                for p in &blk {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8);
                }
            }
            let wv: [__m256i; GC] = std::array::from_fn(|c| F::unpack_avx2(blk[c], j));
            let coef = coefs::<F>(&blk, j);
            for (r, row) in rows.iter().enumerate() {
                let ab = &*row.add(s);
                let q = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                let rr = _mm256_loadu_si256(ab.qr.as_ptr() as *const __m256i);
                let p: [__m256i; GC] = std::array::from_fn(|c| {
                    if F::SIGNED {
                        let w = wv[c];
                        dot32::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w), _mm256_sign_epi8(rr, w))
                    } else {
                        dot32::<VNNI>(wv[c], q, rr)
                    }
                });
                let (lo, hi) = fold8(&p);
                chains.step::<F>(r, lo, hi, &coef, ab);
            }
        }
        chains.store(b, r0, c0, ncols);
    }
}
