//! Activation quantization for the integer dot products: each 32-element block of an f32
//! activation row becomes a 15-bit integer per element split in two signed bytes, a coarse
//! one on ggml's Q8_0 grid (`step = amax/127`) and a residual in 1/128ths of that step:
//! `x ≈ d·(128·qs + qr)` with `d = step/128`, `n = round(x/d)` (ties to even, as the SIMD
//! path), `qs = ⌊(n + 64)/128⌋ ∈ [-127, 127]`, `qr = n − 128·qs ∈ [-64, 63]`. The kernels take
//! two byte dot products per sub-block (`128·Σw·qs + Σw·qr`), so the activations keep ~15 bits
//! instead of ggml's 8: the greedy tokens of a Q4 model then follow the f32 path's, where
//! 8-bit activations flip some (tests/tests/quantized.rs). The block sums the weight formats'
//! offsets and minimums need are the exact f32 sums of the block (and, for kernels that offset
//! signed weights, the exact integer sums of the levels). One block layout serves every weight
//! format, K-quants included. Each row is quantized on its own, so a row's blocks never depend
//! on which other rows share the launch.

/// One quantized activation block (80 bytes, 16-byte aligned).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ActBlock {
    /// Scale of the combined integer: the block's value is `d·(128·qs + qr)`.
    pub d: f32,
    /// `Σx` over all 32 (f32).
    pub s: f32,
    /// `Σx[0..16]` (f32).
    pub s_lo: f32,
    /// `Σ level(l)` over all 32 (exact; kernels that offset signed weights take it off).
    pub a: i32,
    /// The coarse part, on the `128·d` grid.
    pub qs: [i8; 32],
    /// The residual, on the `d` grid.
    pub qr: [i8; 32],
}

// SAFETY: `repr(C)` of four 4-byte fields and two 32-byte arrays is 80 bytes with no padding
// (80 is a multiple of the 16-byte alignment), and every field accepts any bit pattern.
unsafe impl rtllm_plugin_api::bytemuck::Zeroable for ActBlock {}
unsafe impl rtllm_plugin_api::bytemuck::Pod for ActBlock {}
const _: () = assert!(std::mem::size_of::<ActBlock>() == 80);

impl ActBlock {
    /// Element `l` as the kernels see it: `128·qs[l] + qr[l]` (times `d`).
    pub fn level(&self, l: usize) -> i32 {
        128 * self.qs[l] as i32 + self.qr[l] as i32
    }
}

/// Elements per activation block.
pub const QA: usize = 32;

/// Quantizes one row (`x.len()` a multiple of 32) into `out` (`x.len() / 32` blocks).
pub fn quantize_row(x: &[f32], out: &mut [ActBlock], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: callers pass `simd` only when AVX2 is present (see `QIsa`).
        unsafe { quantize_row_avx2(x, out) };
        return;
    }
    let _ = simd;
    for (xb, o) in x.chunks_exact(QA).zip(out.iter_mut()) {
        quantize_block(xb, o);
    }
}

/// `128·127 / amax` (0 for an all-zero block) and `d = amax / (127·128)`.
fn scales(amax: f32) -> (f32, f32) {
    if amax > 0.0 {
        (16256.0 / amax, amax / 16256.0)
    } else {
        (0.0, 0.0)
    }
}

/// Splits a level `n ∈ [-16256, 16256]` into the coarse and residual bytes.
#[inline]
fn split_level(n: i32) -> (i8, i8) {
    let q = (n + 64) >> 7;
    (q as i8, (n - 128 * q) as i8)
}

fn quantize_block(x: &[f32], o: &mut ActBlock) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (id, d) = scales(amax);
    for (l, &v) in x.iter().enumerate() {
        (o.qs[l], o.qr[l]) = split_level((v * id).round_ties_even() as i32);
    }
    o.d = d;
    sums(x, o);
}

/// The f32 and level sums of a block whose levels are set.
#[inline(always)]
fn sums(x: &[f32], o: &mut ActBlock) {
    o.s_lo = x[..16].iter().sum();
    o.s = o.s_lo + x[16..].iter().sum::<f32>();
    o.a = (0..QA).map(|l| o.level(l)).sum();
}

/// # Safety
/// The CPU must support AVX2; `out` must hold `x.len() / 32` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(x: &[f32], out: &mut [ActBlock]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let half = _mm256_set1_epi32(64);
    for (xb, o) in x.chunks_exact(QA).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        let v = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for &vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, vi));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_shuffle_ps::<1>(m4, m4));
        let (id, d) = scales(_mm_cvtss_f32(m4));
        let id = _mm256_set1_ps(id);
        // cvtps rounds to nearest even (the default MXCSR mode), as `round_ties_even`.
        let n = v.map(|vi| _mm256_cvtps_epi32(_mm256_mul_ps(vi, id)));
        let q = n.map(|ni| _mm256_srai_epi32::<7>(_mm256_add_epi32(ni, half)));
        let r: [__m256i; 4] = std::array::from_fn(|i| _mm256_sub_epi32(n[i], _mm256_slli_epi32::<7>(q[i])));
        let pack = |a: [__m256i; 4]| {
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(a[0], a[1]), _mm256_packs_epi32(a[2], a[3]));
            _mm256_permutevar8x32_epi32(packed, perm)
        };
        _mm256_storeu_si256(o.qs.as_mut_ptr() as *mut __m256i, pack(q));
        _mm256_storeu_si256(o.qr.as_mut_ptr() as *mut __m256i, pack(r));
        o.d = d;
        sums(xb, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_fine_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.031)
            .chain((0..32).map(|i| if i == 5 { -3.5 } else { (i as f32 * 0.77).sin() * 1e-3 }))
            .chain([0.0; 32])
            .collect();
        let mut out = vec![ActBlock::default(); 5];
        quantize_row(&x, &mut out, false);
        for (xb, b) in x.chunks_exact(32).zip(&out) {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (l, v) in xb.iter().enumerate() {
                assert!((-127..=127).contains(&b.qs[l]) && (-64..=63).contains(&b.qr[l]), "{b:?}");
                assert!((v - b.d * b.level(l) as f32).abs() <= b.d * 0.5 + amax * 1e-6, "{v} vs {b:?}");
            }
            assert_eq!(b.s_lo, xb[..16].iter().sum::<f32>());
            assert_eq!(b.s, b.s_lo + xb[16..].iter().sum::<f32>());
            assert_eq!(b.a, (0..32).map(|l| b.level(l)).sum::<i32>());
            assert!((b.s - xb.iter().sum::<f32>()).abs() <= 1e-5 * amax.max(1e-30) * 32.0);
        }
        assert_eq!((out[4].qs, out[4].qr, out[4].d), ([0; 32], [0; 32], 0.0));
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut simd = vec![ActBlock::default(); 5];
            quantize_row(&x, &mut simd, true);
            assert_eq!(simd, out);
        }
    }
}
