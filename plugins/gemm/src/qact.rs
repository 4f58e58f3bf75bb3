//! Activation quantization for the integer dot products: each 32-element block of an f32
//! activation row becomes 32 signed bytes with one f32 scale (ggml's Q8_0 rule: `d = amax/127`,
//! `q = round(x/d)`, ties to even as the SIMD path of ggml) plus the block sums that the weight
//! formats' offsets and minimums need (as ggml's Q8_1 carries `s = d·Σq`). One block layout
//! serves every weight format, K-quants included (their activations keep per-32 scales, which
//! is at least as accurate as ggml's per-256 Q8_K).

/// One quantized activation block (48 bytes, 16-byte aligned).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ActBlock {
    /// Scale: the block's value is `d·qs`.
    pub d: f32,
    /// `d·Σqs` over all 32.
    pub s: f32,
    /// `d·Σqs[0..16]`.
    pub s_lo: f32,
    _pad: f32,
    pub qs: [i8; 32],
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

fn quantize_block(x: &[f32], o: &mut ActBlock) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (mut lo, mut hi) = (0i32, 0i32);
    for (l, (&v, q)) in x.iter().zip(o.qs.iter_mut()).enumerate() {
        let r = (v * id).round_ties_even() as i8;
        *q = r;
        if l < 16 {
            lo += r as i32;
        } else {
            hi += r as i32;
        }
    }
    o.d = d;
    o.s = d * (lo + hi) as f32;
    o.s_lo = d * lo as f32;
}

/// # Safety
/// The CPU must support AVX2; `out` must hold `x.len() / 32` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(x: &[f32], out: &mut [ActBlock]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
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
        let amax = _mm_cvtss_f32(m4);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        // cvtps rounds to nearest even (the default MXCSR mode), as ggml's AVX path.
        let i = v.map(|vi| _mm256_cvtps_epi32(_mm256_mul_ps(vi, id)));
        let lo = _mm256_add_epi32(i[0], i[1]);
        let hi = _mm256_add_epi32(i[2], i[3]);
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        _mm256_storeu_si256(o.qs.as_mut_ptr() as *mut __m256i, _mm256_permutevar8x32_epi32(packed, perm));
        let (slo, shi) = (hsum_epi32(lo), hsum_epi32(hi));
        o.d = d;
        o.s = d * (slo + shi) as f32;
        o.s_lo = d * slo as f32;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_epi32(v: std::arch::x86_64::__m256i) -> i32 {
    use std::arch::x86_64::*;
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0x4e>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0xb1>(s));
    _mm_cvtsi128_si32(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.031).chain([0.0; 32]).collect();
        let mut out = vec![ActBlock::default(); 4];
        quantize_row(&x, &mut out, false);
        for (xb, b) in x.chunks_exact(32).zip(&out) {
            for (v, q) in xb.iter().zip(b.qs) {
                assert!((v - b.d * q as f32).abs() <= b.d * 0.5 + 1e-7);
            }
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            let lo: i32 = b.qs[..16].iter().map(|&q| q as i32).sum();
            assert_eq!(b.s, b.d * sum as f32);
            assert_eq!(b.s_lo, b.d * lo as f32);
        }
        assert_eq!(out[3].qs, [0; 32]);
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut simd = vec![ActBlock::default(); 4];
            quantize_row(&x, &mut simd, true);
            assert_eq!(simd, out);
        }
    }
}
