//! The prefill micro-kernel on packed weights: w is widened and transposed into panels of 16
//! columns (`panel[k * 16 + j] = w[j][k]`, zero past the last column) in the workspace, and
//! a 6 × 16 outer-product kernel broadcasts one x element per row and multiplies it with two
//! 8-lane weight vectors. Compared with the dot-product tiles in `tile` this reads weights
//! as one sequential stream, needs no horizontal sums, and does 12 FMAs per 8 loads.

use crate::simd::{read_scalar, read_unaligned, write_unaligned, Isa, Portable, Simd, WeightElem};

/// Columns per packed panel.
pub const PANEL: usize = 16;
/// Rows of x per micro-kernel call.
const MR: usize = 6;

/// Widens and transposes `cols` weight rows (`ld` apart in `w`, starting at depth `k0`, `depth`
/// long) into `cols.div_ceil(16)` panels of `16 * depth` floats in `dst`. Returns without
/// writing when the slices are too short for that (callers size them; see `driver`).
pub fn pack<W: WeightElem>(isa: Isa, w: &[W], ld: usize, k0: usize, depth: usize, cols: usize, dst: &mut [f32]) {
    let panels = cols.div_ceil(PANEL);
    if cols == 0 || depth == 0 || dst.len() < panels * PANEL * depth || (cols - 1) * ld + k0 + depth > w.len() {
        return;
    }
    for p in 0..panels {
        let live = (cols - p * PANEL).min(PANEL);
        // SAFETY: rows p*16..p*16+live, depths k0..k0+depth lie inside `w`, and panel p lies
        // inside `dst` (both checked above); the AVX2 path runs only when the CPU has AVX2.
        unsafe {
            let mut src = [w.as_ptr(); PANEL];
            for (j, s) in src.iter_mut().enumerate().take(live) {
                *s = w.as_ptr().add((p * PANEL + j) * ld + k0);
            }
            let out = dst.as_mut_ptr().add(p * PANEL * depth);
            let done = match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma if live == PANEL => avx2_pack_panel(&src, depth, out),
                _ => 0,
            };
            pack_scalar(&src, live, done, depth, out);
        }
    }
}

/// Depths `from..depth` of one panel, one element at a time (zero past `live` columns).
///
/// # Safety
/// `src[..live]` must be valid for `depth` elements and `out` for `16 * depth` floats.
#[inline(always)]
unsafe fn pack_scalar<W: WeightElem>(src: &[*const W; PANEL], live: usize, from: usize, depth: usize, out: *mut f32) {
    let mut out = out.add(from * PANEL);
    for k in from..depth {
        let mut line = [0.0f32; PANEL];
        for j in 0..live {
            line[j] = read_unaligned::<W, W>(src[j].add(k)).to_f32();
        }
        write_unaligned(out, line);
        out = out.add(PANEL);
    }
}

/// A full panel in 8 × 8 AVX2 transposes; returns how many depths it packed (a multiple of 8).
///
/// # Safety
/// As [`pack_scalar`] with all 16 rows live, and the CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_pack_panel<W: WeightElem>(src: &[*const W; PANEL], depth: usize, out: *mut f32) -> usize {
    use std::arch::x86_64::*;
    let end = depth / 8 * 8;
    let mut k = 0;
    while k < end {
        for half in 0..2 {
            let r = |i: usize| W::load8_avx2(src[half * 8 + i].add(k));
            let (r0, r1, r2, r3, r4, r5, r6, r7) = (r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7));
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
            let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
            let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
            let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
            let cols = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            let mut o = out.add(k * PANEL + half * 8);
            for c in cols {
                write_unaligned(o, c);
                o = o.add(PANEL);
            }
        }
        k += 8;
    }
    end
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
        pack(Isa::Portable, &w, 5, 1, 4, 3, &mut dst);
        for k in 0..4 {
            for j in 0..PANEL {
                let want = if j < 3 { (j * 5 + 1 + k) as f32 } else { 0.0 };
                assert_eq!(dst[k * PANEL + j], want, "k={k} j={j}");
            }
        }
    }

    #[test]
    fn simd_pack_matches_scalar() {
        let isa = Isa::detect();
        // 37 columns = two full panels and a partial one; depth 21 leaves a scalar tail.
        let (cols, ld, k0, depth) = (37usize, 25usize, 3usize, 21usize);
        let w: Vec<f32> = (0..cols * ld).map(|v| (v as f32).sin()).collect();
        let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let mut want = vec![0.0f32; 3 * PANEL * depth];
        let mut got = vec![f32::NAN; 3 * PANEL * depth];
        pack(Isa::Portable, &w, ld, k0, depth, cols, &mut want);
        pack(isa, &w, ld, k0, depth, cols, &mut got);
        assert_eq!(got, want);
        pack(Isa::Portable, &wb, ld, k0, depth, cols, &mut want);
        pack(isa, &wb, ld, k0, depth, cols, &mut got);
        assert_eq!(got, want);
        assert_eq!(want[PANEL * 2 + 1], wb[ld + k0 + 2].to_f32());
    }
}

#[cfg(test)]
mod bench {
    /// Packing speed; run with `cargo test -p rtllm-gemm -- --ignored --nocapture bench_pack`.
    #[test]
    #[ignore = "benchmark: run with --ignored --nocapture"]
    fn bench_pack() {
        let (cols, depth) = (64usize, 576usize);
        let w: Vec<half::bf16> = (0..cols * depth).map(|v| half::bf16::from_f32(v as f32)).collect();
        let wf: Vec<f32> = (0..cols * depth).map(|v| v as f32).collect();
        let mut dst = vec![0.0f32; cols * depth];
        let iters = 2000;
        let start = std::time::Instant::now();
        for _ in 0..iters {
            super::pack(crate::Isa::detect(), &wf, depth, 0, depth, cols, &mut dst);
        }
        let f = start.elapsed().as_secs_f64() / (iters * cols * depth) as f64;
        let start = std::time::Instant::now();
        for _ in 0..iters {
            super::pack(crate::Isa::detect(), &w, depth, 0, depth, cols, &mut dst);
        }
        let b = start.elapsed().as_secs_f64() / (iters * cols * depth) as f64;
        println!("pack: f32 {:.3} ns/element, bf16 {:.3} ns/element", f * 1e9, b * 1e9);
    }
}
