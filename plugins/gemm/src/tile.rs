//! Register-tiled micro-kernels and the block loop around them, for y = x · wᵀ where x rows
//! and w rows are both contiguous along K.
//!
//! A micro-kernel computes an `MR × NR` patch of y: `MR` rows of x against `NR` rows of w,
//! keeping `MR·NR` 8-lane accumulators in registers and reducing them horizontally at the
//! end (the K tail that is not a multiple of 8 is added in scalar). [`Block`] describes one
//! cache-sized block (rows × cols × depth) that a single task computes; [`block_fn`] picks
//! the instantiation for an instruction set and a register tile. These tiles read the weights
//! in place (widening 16-bit ones on the fly), so they serve decodes (few tokens) and launches
//! without a workspace; `packed` serves prefills.

use crate::simd::{Isa, Portable, Simd, WeightElem};

/// One block of the product, as raw pointers into the caller's tensors.
///
/// `x` points at row 0 / depth 0 of the block (`ldx` elements between rows), `w` likewise
/// (`ldw`), `y` at the block's first output (`ldy`). `bias` is null or points at the bias of
/// the block's first column. With `accumulate` the sums are added to y (later K blocks);
/// otherwise y = bias + sum.
pub struct Block<W> {
    pub x: *const f32,
    pub ldx: usize,
    pub w: *const W,
    pub ldw: usize,
    pub y: *mut f32,
    pub ldy: usize,
    pub bias: *const f32,
    pub accumulate: bool,
    pub rows: usize,
    pub cols: usize,
    pub depth: usize,
}

/// The register tile of the main micro-kernel (rows of x × rows of w).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// 1 × 8: one token at a time (decode GEMV); 8 independent accumulators hide FMA latency.
    R1C8,
    /// 3 × 4: 12 accumulators + 3 x vectors + 1 w vector fill the 16 AVX2 registers.
    R3C4,
}

impl Tile {
    /// The tile for a product with `rows` rows of x.
    pub fn for_rows(rows: usize) -> Tile {
        if rows <= 2 {
            Tile::R1C8
        } else {
            Tile::R3C4
        }
    }

    /// Rows of x per micro-kernel call.
    pub fn mr(self) -> usize {
        match self {
            Tile::R1C8 => 1,
            Tile::R3C4 => 3,
        }
    }
}

/// Computes one [`Block`].
///
/// # Safety
/// Every pointer in the block must be valid for the rows, columns and depth it describes, and
/// `y` must not be read or written by anyone else during the call.
pub type BlockFn<W> = unsafe fn(&Block<W>);

/// The block function for this instruction set and register tile.
pub fn block_fn<W: WeightElem>(isa: Isa, tile: Tile) -> BlockFn<W> {
    match (isa, tile) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma, Tile::R1C8) => avx2::block_1x8::<W>,
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma, Tile::R3C4) => avx2::block_3x4::<W>,
        (_, Tile::R1C8) => block_1x8::<Portable, W>,
        (_, Tile::R3C4) => block_3x4::<Portable, W>,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Block, WeightElem};
    use crate::simd::Avx2;

    /// # Safety
    /// As [`super::BlockFn`], and the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_1x8<W: WeightElem>(b: &Block<W>) {
        super::block_1x8::<Avx2, W>(b)
    }

    /// # Safety
    /// As [`super::BlockFn`], and the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block_3x4<W: WeightElem>(b: &Block<W>) {
        super::block_3x4::<Avx2, W>(b)
    }
}

/// Row by row, 8 columns at a time; leftover columns one at a time.
#[inline(always)]
unsafe fn block_1x8<S: Simd, W: WeightElem>(b: &Block<W>) {
    for i in 0..b.rows {
        let x = b.x.add(i * b.ldx);
        let mut j = 0;
        while j + 8 <= b.cols {
            let sums = micro_1x8::<S, W>(x, b.w.add(j * b.ldw), b.ldw, b.depth);
            store(b, i, j, &sums);
            j += 8;
        }
        tail_cols::<S, W, 1>(b, i, j);
    }
}

/// 3-row strips, 4 columns at a time; leftover rows use 1 × 4, leftover columns 1 column.
#[inline(always)]
unsafe fn block_3x4<S: Simd, W: WeightElem>(b: &Block<W>) {
    let mut i = 0;
    while i + 3 <= b.rows {
        let x = b.x.add(i * b.ldx);
        let mut j = 0;
        while j + 4 <= b.cols {
            let sums = micro_3x4::<S, W>(x, b.ldx, b.w.add(j * b.ldw), b.ldw, b.depth);
            store(b, i, j, &sums);
            j += 4;
        }
        tail_cols::<S, W, 3>(b, i, j);
        i += 3;
    }
    while i < b.rows {
        let x = b.x.add(i * b.ldx);
        let mut j = 0;
        while j + 4 <= b.cols {
            let sums = micro::<S, W, 1, 4>(x, b.ldx, b.w.add(j * b.ldw), b.ldw, b.depth);
            store(b, i, j, &sums);
            j += 4;
        }
        tail_cols::<S, W, 1>(b, i, j);
        i += 1;
    }
}

/// Columns `j..cols` of the `MR` rows starting at row `i`, one column at a time.
#[inline(always)]
unsafe fn tail_cols<S: Simd, W: WeightElem, const MR: usize>(b: &Block<W>, i: usize, mut j: usize) {
    let x = b.x.add(i * b.ldx);
    while j < b.cols {
        let sums = micro::<S, W, MR, 1>(x, b.ldx, b.w.add(j * b.ldw), b.ldw, b.depth);
        store(b, i, j, &sums);
        j += 1;
    }
}

/// Writes an `MR × NR` patch of sums at (i, j) of the block.
#[inline(always)]
unsafe fn store<W, const MR: usize, const NR: usize>(b: &Block<W>, i: usize, j: usize, sums: &[[f32; NR]; MR]) {
    for (r, row) in sums.iter().enumerate() {
        let y = b.y.add((i + r) * b.ldy + j);
        for (c, &s) in row.iter().enumerate() {
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

/// Adds the scalar K tail (`vec_end..depth`) to reduced sums: `out[r][c] = hsum(acc) + tail`.
#[inline(always)]
unsafe fn finish<S: Simd, W: WeightElem, const MR: usize, const NR: usize>(
    acc: &[[S::V; NR]; MR],
    x: *const f32,
    ldx: usize,
    w: *const W,
    ldw: usize,
    vec_end: usize,
    depth: usize,
) -> [[f32; NR]; MR] {
    let mut out = [[0.0f32; NR]; MR];
    for r in 0..MR {
        for c in 0..NR {
            let mut s = S::hsum(acc[r][c]);
            for t in vec_end..depth {
                s += *x.add(r * ldx + t) * (*w.add(c * ldw + t)).to_f32();
            }
            out[r][c] = s;
        }
    }
    out
}

/// The 1 × 8 micro-kernel, written out so every accumulator stays in a register.
#[inline(always)]
unsafe fn micro_1x8<S: Simd, W: WeightElem>(x: *const f32, w: *const W, ldw: usize, depth: usize) -> [[f32; 8]; 1] {
    let vec_end = depth & !7;
    let (w0, w1, w2, w3) = (w, w.add(ldw), w.add(2 * ldw), w.add(3 * ldw));
    let (w4, w5, w6, w7) = (w.add(4 * ldw), w.add(5 * ldw), w.add(6 * ldw), w.add(7 * ldw));
    let (mut c0, mut c1, mut c2, mut c3) = (S::zero(), S::zero(), S::zero(), S::zero());
    let (mut c4, mut c5, mut c6, mut c7) = (S::zero(), S::zero(), S::zero(), S::zero());
    let mut k = 0;
    while k < vec_end {
        let a = S::load(x.add(k));
        c0 = S::fma(a, S::load_w(w0.add(k)), c0);
        c1 = S::fma(a, S::load_w(w1.add(k)), c1);
        c2 = S::fma(a, S::load_w(w2.add(k)), c2);
        c3 = S::fma(a, S::load_w(w3.add(k)), c3);
        c4 = S::fma(a, S::load_w(w4.add(k)), c4);
        c5 = S::fma(a, S::load_w(w5.add(k)), c5);
        c6 = S::fma(a, S::load_w(w6.add(k)), c6);
        c7 = S::fma(a, S::load_w(w7.add(k)), c7);
        k += 8;
    }
    finish::<S, W, 1, 8>(&[[c0, c1, c2, c3, c4, c5, c6, c7]], x, 0, w, ldw, vec_end, depth)
}

/// The 3 × 4 micro-kernel, written out so every accumulator stays in a register.
#[inline(always)]
unsafe fn micro_3x4<S: Simd, W: WeightElem>(
    x: *const f32,
    ldx: usize,
    w: *const W,
    ldw: usize,
    depth: usize,
) -> [[f32; 4]; 3] {
    let vec_end = depth & !7;
    let (x0, x1, x2) = (x, x.add(ldx), x.add(2 * ldx));
    let (w0, w1, w2, w3) = (w, w.add(ldw), w.add(2 * ldw), w.add(3 * ldw));
    let (mut c00, mut c01, mut c02, mut c03) = (S::zero(), S::zero(), S::zero(), S::zero());
    let (mut c10, mut c11, mut c12, mut c13) = (S::zero(), S::zero(), S::zero(), S::zero());
    let (mut c20, mut c21, mut c22, mut c23) = (S::zero(), S::zero(), S::zero(), S::zero());
    let mut k = 0;
    while k < vec_end {
        let (a0, a1, a2) = (S::load(x0.add(k)), S::load(x1.add(k)), S::load(x2.add(k)));
        let b = S::load_w(w0.add(k));
        c00 = S::fma(a0, b, c00);
        c10 = S::fma(a1, b, c10);
        c20 = S::fma(a2, b, c20);
        let b = S::load_w(w1.add(k));
        c01 = S::fma(a0, b, c01);
        c11 = S::fma(a1, b, c11);
        c21 = S::fma(a2, b, c21);
        let b = S::load_w(w2.add(k));
        c02 = S::fma(a0, b, c02);
        c12 = S::fma(a1, b, c12);
        c22 = S::fma(a2, b, c22);
        let b = S::load_w(w3.add(k));
        c03 = S::fma(a0, b, c03);
        c13 = S::fma(a1, b, c13);
        c23 = S::fma(a2, b, c23);
        k += 8;
    }
    let acc = [[c00, c01, c02, c03], [c10, c11, c12, c13], [c20, c21, c22, c23]];
    finish::<S, W, 3, 4>(&acc, x, ldx, w, ldw, vec_end, depth)
}

/// Dot products of `MR` rows of x with `NR` rows of w over `depth` elements (edge tiles).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc is indexed by row and column together
unsafe fn micro<S: Simd, W: WeightElem, const MR: usize, const NR: usize>(
    x: *const f32,
    ldx: usize,
    w: *const W,
    ldw: usize,
    depth: usize,
) -> [[f32; NR]; MR] {
    let mut acc = [[S::zero(); NR]; MR];
    let vec_end = depth & !7;
    let mut k = 0;
    while k < vec_end {
        let mut xv = [S::zero(); MR];
        for (r, v) in xv.iter_mut().enumerate() {
            *v = S::load(x.add(r * ldx + k));
        }
        for c in 0..NR {
            let wv = S::load_w(w.add(c * ldw + k));
            for r in 0..MR {
                acc[r][c] = S::fma(xv[r], wv, acc[r][c]);
            }
        }
        k += 8;
    }
    finish::<S, W, MR, NR>(&acc, x, ldx, w, ldw, vec_end, depth)
}
