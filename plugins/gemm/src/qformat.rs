//! The GGUF weight block formats as the quantized dot products see them: every weight row is
//! a run of 32-element sub-blocks, each with 32 small integers (unsigned 0..=63, or signed for
//! Q8_0) and the coefficients that turn their integer dot product with a quantized activation
//! block into a real number (see [`Coef`]). Layouts are ggml's (plugin-api `quant`).

use rtllm_plugin_api::quant::get_scale_min_k4;
use rtllm_plugin_api::DType;

/// How one 32-element sub-block of weights contributes, given its integer dot products with
/// an activation block of scale `da` (`dot_lo` over elements 0..16, `dot_hi` over 16..32) and
/// the activation sums `s_lo = da·Σq[0..16]`, `s_hi = da·Σq[16..32]`:
/// `da·(a[0]·dot_lo + a[1]·dot_hi) + b[0]·s_lo + b[1]·s_hi`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coef {
    pub a: [f32; 2],
    pub b: [f32; 2],
}

impl Coef {
    #[inline(always)]
    fn uniform(a: f32, b: f32) -> Coef {
        Coef { a: [a, a], b: [b, b] }
    }
}

/// f16 → f32 for block scales: F16C inside SIMD kernels, `half` elsewhere.
pub trait HalfCvt {
    /// # Safety
    /// `p` must be valid for 2 bytes, and the conversion's instruction set available.
    unsafe fn read(p: *const u8) -> f32;
}

/// Software / runtime-detected conversion (the `half` crate).
pub struct SoftHalf;

impl HalfCvt for SoftHalf {
    #[inline(always)]
    unsafe fn read(p: *const u8) -> f32 {
        half::f16::from_bits(u16::from_le_bytes([*p, *p.add(1)])).to_f32()
    }
}

/// The F16C instruction.
#[cfg(target_arch = "x86_64")]
pub struct F16c;

#[cfg(target_arch = "x86_64")]
impl HalfCvt for F16c {
    #[inline]
    #[target_feature(enable = "f16c")]
    unsafe fn read(p: *const u8) -> f32 {
        use std::arch::x86_64::*;
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// A weight block format.
pub trait Format: Send + Sync + 'static {
    const DTYPE: DType;
    /// Elements per block.
    const BLOCK: usize;
    /// Bytes per block.
    const BYTES: usize;
    /// All 32 elements of a sub-block share one `a` and one `b` (`a[0] == a[1]`, `b[0] == b[1]`).
    const UNIFORM: bool;
    /// The integers are signed bytes (−127..=127); otherwise unsigned 0..=63.
    const SIGNED: bool;
    /// Byte offset of 16 packed nibble bytes (low nibbles elements 0..16, high 16..32) when
    /// that is the whole sub-block (Q4_0, Q4_1), for kernels that widen nibbles directly.
    const NIBBLES_AT: Option<usize> = None;

    /// Coefficients of sub-block `j` (0..BLOCK/32) of the block at `b`.
    ///
    /// # Safety
    /// `b` must be valid for `BYTES` bytes; `H`'s instruction set must be available.
    unsafe fn coef<H: HalfCvt>(b: *const u8, j: usize) -> Coef;

    /// The 32 integers of sub-block `j` (as bytes; reinterpret as i8 when `SIGNED`).
    ///
    /// # Safety
    /// `b` must be valid for `BYTES` bytes.
    unsafe fn unpack(b: *const u8, j: usize, out: &mut [u8; 32]);

    /// As [`Format::unpack`], in a 256-bit register.
    ///
    /// # Safety
    /// As `unpack`, and the CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack_avx2(b: *const u8, j: usize) -> std::arch::x86_64::__m256i;
}

/// `block_q8_0`: `f16 d; i8 qs[32]`.
pub struct Q8_0;
/// `block_q4_0`: `f16 d; u8 qs[16]`; value `(q - 8)·d`.
pub struct Q4_0;
/// `block_q4_1`: `f16 d, m; u8 qs[16]`; value `q·d + m`.
pub struct Q4_1;
/// `block_q4_K`: 256 elements, eight 32-element sub-blocks with 6-bit scales and mins.
pub struct Q4K;
/// `block_q6_K`: 256 elements, sixteen 16-element sub-blocks with signed 8-bit scales.
pub struct Q6K;

/// Low nibbles of 16 bytes then their high nibbles (Q4_0 / Q4_1 element order).
#[inline(always)]
unsafe fn nibbles16(qs: *const u8, out: &mut [u8; 32]) {
    for l in 0..16 {
        let q = *qs.add(l);
        out[l] = q & 0x0f;
        out[l + 16] = q >> 4;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles16_avx2(qs: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let v = _mm_loadu_si128(qs as *const __m128i);
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
    _mm256_set_m128i(hi, lo)
}

impl Format for Q8_0 {
    const DTYPE: DType = DType::Q8_0;
    const BLOCK: usize = 32;
    const BYTES: usize = 34;
    const UNIFORM: bool = true;
    const SIGNED: bool = true;

    #[inline(always)]
    unsafe fn coef<H: HalfCvt>(b: *const u8, _j: usize) -> Coef {
        Coef::uniform(H::read(b), 0.0)
    }

    #[inline(always)]
    unsafe fn unpack(b: *const u8, _j: usize, out: &mut [u8; 32]) {
        std::ptr::copy_nonoverlapping(b.add(2), out.as_mut_ptr(), 32);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_avx2(b: *const u8, _j: usize) -> std::arch::x86_64::__m256i {
        std::arch::x86_64::_mm256_loadu_si256(b.add(2) as *const _)
    }
}

impl Format for Q4_0 {
    const DTYPE: DType = DType::Q4_0;
    const BLOCK: usize = 32;
    const BYTES: usize = 18;
    const UNIFORM: bool = true;
    const SIGNED: bool = false;
    const NIBBLES_AT: Option<usize> = Some(2);

    #[inline(always)]
    unsafe fn coef<H: HalfCvt>(b: *const u8, _j: usize) -> Coef {
        let d = H::read(b);
        Coef::uniform(d, -8.0 * d)
    }

    #[inline(always)]
    unsafe fn unpack(b: *const u8, _j: usize, out: &mut [u8; 32]) {
        nibbles16(b.add(2), out)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_avx2(b: *const u8, _j: usize) -> std::arch::x86_64::__m256i {
        nibbles16_avx2(b.add(2))
    }
}

impl Format for Q4_1 {
    const DTYPE: DType = DType::Q4_1;
    const BLOCK: usize = 32;
    const BYTES: usize = 20;
    const UNIFORM: bool = true;
    const SIGNED: bool = false;
    const NIBBLES_AT: Option<usize> = Some(4);

    #[inline(always)]
    unsafe fn coef<H: HalfCvt>(b: *const u8, _j: usize) -> Coef {
        Coef::uniform(H::read(b), H::read(b.add(2)))
    }

    #[inline(always)]
    unsafe fn unpack(b: *const u8, _j: usize, out: &mut [u8; 32]) {
        nibbles16(b.add(4), out)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_avx2(b: *const u8, _j: usize) -> std::arch::x86_64::__m256i {
        nibbles16_avx2(b.add(4))
    }
}

impl Format for Q4K {
    const DTYPE: DType = DType::Q4_K;
    const BLOCK: usize = 256;
    const BYTES: usize = 144;
    const UNIFORM: bool = true;
    const SIGNED: bool = false;

    #[inline(always)]
    unsafe fn coef<H: HalfCvt>(b: *const u8, j: usize) -> Coef {
        let (d, dmin) = (H::read(b), H::read(b.add(2)));
        let scales = std::slice::from_raw_parts(b.add(4), 12);
        let (sc, m) = get_scale_min_k4(j, scales);
        Coef::uniform(d * sc as f32, -dmin * m as f32)
    }

    #[inline(always)]
    unsafe fn unpack(b: *const u8, j: usize, out: &mut [u8; 32]) {
        // Sub-blocks 2c and 2c+1 are the low and high nibbles of the 32 bytes of chunk c.
        let qs = b.add(16 + 32 * (j / 2));
        let shift = 4 * (j % 2);
        for (l, o) in out.iter_mut().enumerate() {
            *o = (*qs.add(l) >> shift) & 0x0f;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_avx2(b: *const u8, j: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let v = _mm256_loadu_si256(b.add(16 + 32 * (j / 2)) as *const __m256i);
        let v = _mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (j % 2) as i32));
        _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
    }
}

impl Format for Q6K {
    const DTYPE: DType = DType::Q6_K;
    const BLOCK: usize = 256;
    const BYTES: usize = 210;
    const UNIFORM: bool = false;
    const SIGNED: bool = false;

    #[inline(always)]
    unsafe fn coef<H: HalfCvt>(b: *const u8, j: usize) -> Coef {
        let d = H::read(b.add(208));
        let lo = d * (*b.add(192 + 2 * j) as i8) as f32;
        let hi = d * (*b.add(193 + 2 * j) as i8) as f32;
        Coef { a: [lo, hi], b: [-32.0 * lo, -32.0 * hi] }
    }

    #[inline(always)]
    unsafe fn unpack(b: *const u8, j: usize, out: &mut [u8; 32]) {
        // Half h = j/4 of the block; within it, sub-block jj takes ql bytes (jj&1)*32.., the
        // (jj>>1) nibble, and bits 2*jj of qh.
        let (h, jj) = (j / 4, j % 4);
        let ql = b.add(64 * h + 32 * (jj & 1));
        let qh = b.add(128 + 32 * h);
        let nib_shift = 4 * (jj >> 1);
        for (l, o) in out.iter_mut().enumerate() {
            let lo = (*ql.add(l) >> nib_shift) & 0x0f;
            let hi = (*qh.add(l) >> (2 * jj)) & 3;
            *o = lo | (hi << 4);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_avx2(b: *const u8, j: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let (h, jj) = (j / 4, j % 4);
        let ql = _mm256_loadu_si256(b.add(64 * h + 32 * (jj & 1)) as *const __m256i);
        let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
        let lo =
            _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (jj >> 1) as i32)), _mm256_set1_epi8(0x0f));
        let hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * jj as i32)), _mm256_set1_epi8(3));
        _mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::quant::{dequantize_row_to_vec, quantize_row_to_vec};

    /// coef + unpack reproduce ggml's dequantization of every element.
    fn check<F: Format>() {
        let n = 512;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.7).collect();
        let q = quantize_row_to_vec(F::DTYPE, &x).unwrap();
        let want = dequantize_row_to_vec(F::DTYPE, &q, n).unwrap();
        for blk in 0..n / F::BLOCK {
            let b = q[blk * F::BYTES..].as_ptr();
            for j in 0..F::BLOCK / 32 {
                let mut ints = [0u8; 32];
                // SAFETY: the block lies inside `q`.
                let c = unsafe {
                    F::unpack(b, j, &mut ints);
                    F::coef::<SoftHalf>(b, j)
                };
                #[cfg(target_arch = "x86_64")]
                if is_x86_feature_detected!("avx2") {
                    let mut simd = [0u8; 32];
                    // SAFETY: AVX2 is present; the block lies inside `q`.
                    unsafe {
                        std::arch::x86_64::_mm256_storeu_si256(simd.as_mut_ptr() as *mut _, F::unpack_avx2(b, j))
                    };
                    assert_eq!(simd, ints, "{} block {blk} sub {j}", F::DTYPE);
                }
                for (l, &v) in ints.iter().enumerate() {
                    let v = if F::SIGNED { v as i8 as f32 } else { v as f32 };
                    let got = c.a[l / 16] * v + c.b[l / 16];
                    let idx = blk * F::BLOCK + 32 * j + l;
                    assert!((got - want[idx]).abs() <= 1e-5 * want[idx].abs().max(1.0), "{} element {idx}", F::DTYPE);
                }
            }
        }
    }

    #[test]
    fn sub_blocks_reproduce_dequantization() {
        check::<Q8_0>();
        check::<Q4_0>();
        check::<Q4_1>();
        check::<Q4K>();
        check::<Q6K>();
    }
}
