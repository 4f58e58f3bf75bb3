//! The prefill micro-kernel on packed weights: w is widened and transposed into panels of 16
//! columns (`panel[k * 16 + j] = w[j][k]`, zero past the last column) in the workspace, and
//! a 6 × 16 outer-product kernel broadcasts one x element per row and multiplies it with two
//! 8-lane weight vectors. Compared with the dot-product tiles in `tile` this reads weights
//! as one sequential stream, needs no horizontal sums, and does 12 FMAs per 8 loads.

use crate::simd::{read_scalar, Isa, Portable, Simd, WeightElem};

/// Columns per packed panel.
pub const PANEL: usize = 16;
/// Rows of x per micro-kernel call.
const MR: usize = 6;

/// Widens and transposes `cols` weight rows (`ld` apart in `w`, starting at depth `k0`, `depth`
/// long) into `cols.div_ceil(16)` panels of `16 * depth` floats in `dst`.
pub fn pack<W: WeightElem>(w: &[W], ld: usize, k0: usize, depth: usize, cols: usize, dst: &mut [f32]) {
    for (p, panel) in dst
        .chunks_exact_mut(PANEL * depth.max(1))
        .take(cols.div_ceil(PANEL))
        .enumerate()
    {
        for j in 0..PANEL {
            let col = p * PANEL + j;
            if col < cols {
                let src = &w[col * ld + k0..col * ld + k0 + depth];
                for (d, s) in panel[j..].iter_mut().step_by(PANEL).zip(src) {
                    *d = s.to_f32();
                }
            } else {
                panel[j..].iter_mut().step_by(PANEL).for_each(|d| *d = 0.0);
            }
        }
    }
}

/// One block on packed weights; as [`crate::tile::Block`] but `panels` holds
/// `cols.div_ceil(16)` panels of `16 * depth` floats.
pub struct PackedBlock {
    pub x: *const f32,
    pub ldx: usize,
    pub panels: *const f32,
    pub y: *mut f32,
    pub ldy: usize,
    pub bias: *const f32,
    pub accumulate: bool,
    pub rows: usize,
    pub cols: usize,
    pub depth: usize,
}

/// Computes one [`PackedBlock`].
///
/// # Safety
/// Every pointer must be valid for the rows, columns and depth the block describes; `y` must
/// not be touched by anyone else during the call.
pub type PackedFn = unsafe fn(&PackedBlock);

/// The packed block function for this instruction set.
pub fn packed_fn(isa: Isa) -> PackedFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => avx2_block,
        _ => portable_block,
    }
}

/// # Safety
/// As [`PackedFn`], and the CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_block(b: &PackedBlock) {
    block::<crate::simd::Avx2>(b)
}

/// # Safety
/// As [`PackedFn`].
unsafe fn portable_block(b: &PackedBlock) {
    block::<Portable>(b)
}

/// `MR`-row strips against every panel; the last rows use a smaller instantiation.
#[inline(always)]
unsafe fn block<S: Simd>(b: &PackedBlock) {
    let mut i = 0;
    while i + MR <= b.rows {
        strip::<S, MR>(b, i);
        i += MR;
    }
    match b.rows - i {
        1 => strip::<S, 1>(b, i),
        2 => strip::<S, 2>(b, i),
        3 => strip::<S, 3>(b, i),
        4 => strip::<S, 4>(b, i),
        5 => strip::<S, 5>(b, i),
        _ => {}
    }
}

#[inline(always)]
unsafe fn strip<S: Simd, const R: usize>(b: &PackedBlock, i: usize) {
    let x = b.x.add(i * b.ldx);
    for p in 0..b.cols.div_ceil(PANEL) {
        let acc = micro::<S, R>(x, b.ldx, b.panels.add(p * PANEL * b.depth), b.depth);
        store::<S, R>(b, i, p * PANEL, &acc);
    }
}

/// `R` rows of x times one panel: `R × 16` sums in `2·R` accumulators.
///
/// Row pointers are computed once and the panel pointer is bumped, so builds with overflow
/// checks keep them out of the inner loop.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // rows index the row pointers and acc together
unsafe fn micro<S: Simd, const R: usize>(x: *const f32, ldx: usize, panel: *const f32, depth: usize) -> [[S::V; 2]; R] {
    let mut acc = [[S::zero(); 2]; R];
    let mut rows = [x; R];
    for r in 1..R {
        rows[r] = rows[r - 1].add(ldx);
    }
    let mut p = panel;
    for k in 0..depth {
        let b0 = S::load(p);
        let b1 = S::load(p.add(8));
        for r in 0..R {
            let a = S::splat(read_scalar(rows[r].add(k)));
            acc[r][0] = S::fma(a, b0, acc[r][0]);
            acc[r][1] = S::fma(a, b1, acc[r][1]);
        }
        p = p.add(PANEL);
    }
    acc
}

/// Writes `R × 16` sums at (i, j) of the block: whole vectors when all 16 columns exist.
#[inline(always)]
unsafe fn store<S: Simd, const R: usize>(b: &PackedBlock, i: usize, j: usize, acc: &[[S::V; 2]; R]) {
    let cols = (b.cols - j).min(PANEL);
    for (r, &[v0, v1]) in acc.iter().enumerate() {
        let y = b.y.add((i + r) * b.ldy + j);
        if cols == PANEL {
            let (base0, base1) = if b.accumulate {
                (S::load(y), S::load(y.add(8)))
            } else if b.bias.is_null() {
                (S::zero(), S::zero())
            } else {
                (S::load(b.bias.add(j)), S::load(b.bias.add(j + 8)))
            };
            S::store(y, S::add(v0, base0));
            S::store(y.add(8), S::add(v1, base1));
        } else {
            let mut sums = [0.0f32; PANEL];
            S::store(sums.as_mut_ptr(), v0);
            S::store(sums.as_mut_ptr().add(8), v1);
            for (c, &s) in sums.iter().enumerate().take(cols) {
                let base = if b.accumulate {
                    *y.add(c)
                } else if b.bias.is_null() {
                    0.0
                } else {
                    *b.bias.add(j + c)
                };
                *y.add(c) = base + s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_transposes_and_zero_pads() {
        // 3 rows of depth 4 (ld 5, starting at k0 = 1).
        let w: Vec<f32> = (0..15).map(|v| v as f32).collect();
        let mut dst = vec![f32::NAN; PANEL * 4];
        pack(&w, 5, 1, 4, 3, &mut dst);
        for k in 0..4 {
            for j in 0..PANEL {
                let want = if j < 3 { (j * 5 + 1 + k) as f32 } else { 0.0 };
                assert_eq!(dst[k * PANEL + j], want, "k={k} j={j}");
            }
        }
    }
}
