//! The AVX-512 VNNI kernel for many activation rows (prefill): each task repacks eight weight
//! columns at a time into a panel in its workspace slot — per sub-block, the 32 weight
//! integers of the eight columns interleaved four bytes at a time (so one `vpdpbusd` with a
//! broadcast group of four activation bytes adds four products to each column's lane), then
//! the columns' coefficients as vectors — and runs every activation row against the panel.
//! The integer dots come out one lane per column, exact, and enter the same f32 chains as
//! `qdot`'s kernels (`qdot::x86::Chains`), so the outputs are bit-identical to theirs; the
//! repacking is paid once per eight columns and spread over all rows.
//!
//! Signed weights (Q8_0) are stored offset by 128 (unsigned, as `vpdpbusd` wants) and the
//! offset's contribution, 128 × the activation block's level sum, is taken off exactly (signed
//! formats have one scale per sub-block; `block_panel` asserts it at compile time).

use crate::qdot::{QBlock, GC};
use crate::qformat::Format;

/// Bytes of one sub-block in a panel: 8 groups × 8 columns × 4 integers, then the columns'
/// coefficients `a[0]`, `a[1]`, `b[0]`, `b[1]` (eight f32 each).
pub const SUB_BYTES: usize = 32 * GC + 4 * 4 * GC;

/// Bytes of one task's panel slot for rows of `nsub` sub-blocks.
pub fn slot_bytes(nsub: usize) -> usize {
    nsub * SUB_BYTES
}

/// Computes `b` (all its rows, columns in groups of eight) with `panel` as scratch.
///
/// # Safety
/// As [`crate::qdot::QBlockFn`]; `panel` must be valid for [`slot_bytes`]`(b.nsub)` bytes and
/// used by no one else; the CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn block_panel<F: Format>(b: &QBlock, panel: *mut u8) {
    const { assert!(!F::SIGNED || F::UNIFORM, "signed weights with two scales per sub-block") };
    let mut c0 = 0;
    while c0 < b.cols {
        let ncols = (b.cols - c0).min(GC);
        x86::repack::<F>(b, c0, ncols, panel);
        let mut r = 0;
        while r < b.rows {
            let n = (b.rows - r).min(x86::PR);
            match n {
                1 => x86::rows::<F, 1>(b, panel, r, c0, ncols),
                2 => x86::rows::<F, 2>(b, panel, r, c0, ncols),
                3 => x86::rows::<F, 3>(b, panel, r, c0, ncols),
                _ => x86::rows::<F, { x86::PR }>(b, panel, r, c0, ncols),
            }
            r += n;
        }
        c0 += ncols;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::SUB_BYTES;
    use crate::qact::ActBlock;
    use crate::qdot::x86::{coefs, Chains, Coefs};
    use crate::qdot::{QBlock, GC};
    use crate::qformat::Format;
    use std::arch::x86_64::*;

    /// Activation rows per pass over a panel.
    pub const PR: usize = 4;

    /// Repacks columns `c0..c0+ncols` (missing columns repeat the last) into `panel`.
    #[inline(always)]
    pub unsafe fn repack<F: Format>(b: &QBlock, c0: usize, ncols: usize, panel: *mut u8) {
        let subs = F::BLOCK / 32;
        let wrow: [*const u8; GC] = std::array::from_fn(|j| b.w.add((c0 + j.min(ncols - 1)) * b.row_bytes));
        let mut cols = [[0u32; GC]; GC];
        for s in 0..b.nsub {
            let (blk_off, j) = (s / subs * F::BYTES, s % subs);
            let blk: [*const u8; GC] = std::array::from_fn(|c| wrow[c].add(blk_off));
            for (c, out) in cols.iter_mut().enumerate() {
                let mut v = F::unpack_avx2(blk[c], j);
                if F::SIGNED {
                    v = _mm256_xor_si256(v, _mm256_set1_epi8(-128));
                }
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v);
            }
            let dst = panel.add(s * SUB_BYTES);
            // Group g of column c (integers 4g..4g+4) goes to dword 8g + c.
            let words = dst as *mut u32;
            for g in 0..GC {
                for (c, col) in cols.iter().enumerate() {
                    words.add(g * GC + c).write_unaligned(col[g]);
                }
            }
            let coef = coefs::<F>(&blk, j);
            let f = dst.add(32 * GC) as *mut f32;
            for (i, v) in [coef.a[0], coef.a[1], coef.b[0], coef.b[1]].into_iter().enumerate() {
                _mm256_storeu_ps(f.add(i * GC), v);
            }
        }
    }

    /// Rows `r0..r0+R` against the panel of columns `c0..c0+ncols`.
    #[inline(always)]
    pub unsafe fn rows<F: Format, const R: usize>(b: &QBlock, panel: *const u8, r0: usize, c0: usize, ncols: usize) {
        let rows: [*const ActBlock; R] = std::array::from_fn(|r| b.acts.add((r0 + r) * b.lda));
        let mut chains = Chains::<R>::new();
        for s in 0..b.nsub {
            let src = panel.add(s * SUB_BYTES);
            let ab: [&ActBlock; R] = std::array::from_fn(|r| &*rows[r].add(s));
            // Coarse and residual dots per row and half (one half when the sub-block is uniform).
            let mut q = [[_mm256_setzero_si256(); 2]; R];
            let mut res = [[_mm256_setzero_si256(); 2]; R];
            for g in 0..8 {
                let h = if F::UNIFORM { 0 } else { g / 4 };
                let wg = _mm256_loadu_si256(src.add(32 * g) as *const __m256i);
                for r in 0..R {
                    let aq = _mm256_set1_epi32((ab[r].qs.as_ptr().add(4 * g) as *const i32).read_unaligned());
                    let ar = _mm256_set1_epi32((ab[r].qr.as_ptr().add(4 * g) as *const i32).read_unaligned());
                    q[r][h] = _mm256_dpbusd_epi32(q[r][h], wg, aq);
                    res[r][h] = _mm256_dpbusd_epi32(res[r][h], wg, ar);
                }
            }
            let f = src.add(32 * GC) as *const f32;
            let l = |i: usize| _mm256_loadu_ps(f.add(i * GC));
            let coef = Coefs { a: [l(0), l(1)], b: [l(2), l(3)] };
            for r in 0..R {
                let int = |h: usize| {
                    let v = _mm256_add_epi32(_mm256_slli_epi32::<7>(q[r][h]), res[r][h]);
                    if F::SIGNED {
                        // Signed formats are uniform (one half): the block's whole level sum.
                        _mm256_sub_epi32(v, _mm256_set1_epi32(128 * ab[r].a))
                    } else {
                        v
                    }
                };
                let (lo, hi) = if F::UNIFORM { (int(0), _mm256_setzero_si256()) } else { (int(0), int(1)) };
                chains.step::<F>(r, lo, hi, &coef, ab[r]);
            }
        }
        chains.store(b, r0, c0, ncols);
    }
}
