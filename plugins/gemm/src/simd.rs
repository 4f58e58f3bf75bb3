//! SIMD back ends for the matmul micro-kernels and the weight element types they read.
//!
//! [`Simd`] is the handful of vector operations a micro-kernel needs over 8 f32 lanes. Two
//! back ends implement it: [`Avx2`] (std::arch AVX2 + FMA + F16C, chosen at kernel creation
//! when the CPU has them) and [`Portable`] (8-lane arrays the compiler vectorises for any
//! target). [`WeightElem`] is a weight element (f32, bf16, f16, FP8 E4M3) and how it widens
//! to f32, one value at a time or 8 at once on AVX2 (bf16 → f32 is a 16-bit shift; f16 uses
//! F16C; E4M3 moves its bits into f32's and rescales the exponent bias).

use half::{bf16, f16};
use rtllm_plugin_api::fp8::{e4m3_to_f32, F8E4M3};

/// An unaligned value, read by field so no `copy_nonoverlapping` (and, in builds with debug
/// assertions, none of its overlap checks that keep vectors out of registers) is involved.
#[repr(C, packed)]
struct Unaligned<T>(T);

/// Reads a `T` from a possibly unaligned address.
///
/// # Safety
/// `p` must be valid for reading `size_of::<T>()` bytes.
#[inline(always)]
pub unsafe fn read_unaligned<T: Copy, P>(p: *const P) -> T {
    (*(p as *const Unaligned<T>)).0
}

/// Reads one f32 without the alignment check that debug builds put on a plain `*p`.
///
/// # Safety
/// `p` must be valid for reading an f32.
#[inline(always)]
pub unsafe fn read_scalar(p: *const f32) -> f32 {
    read_unaligned::<f32, f32>(p)
}

/// Writes a `T` to a possibly unaligned address (by field, as [`read_unaligned`]).
///
/// # Safety
/// `p` must be valid for writing `size_of::<T>()` bytes.
#[inline(always)]
pub unsafe fn write_unaligned<T: Copy, P>(p: *mut P, v: T) {
    (*(p as *mut Unaligned<T>)).0 = v;
}

/// The instruction set a kernel instance runs on, detected once at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86_64 with AVX2, FMA and F16C.
    Avx2Fma,
    /// Any CPU: plain Rust the compiler auto-vectorises.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    /// Whether this CPU can run code for `self`.
    pub fn is_supported(self) -> bool {
        self == Isa::Portable || self == Isa::detect()
    }
}

/// A weight element the kernels read: f32, or a 16-bit float widened on the fly.
pub trait WeightElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;

    /// Loads 8 consecutive elements as f32 lanes.
    ///
    /// # Safety
    /// `p` must be valid for reading 8 elements and the CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8_avx2(p: *const Self) -> std::arch::x86_64::__m256;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_avx2(p: *const f32) -> std::arch::x86_64::__m256 {
        read_unaligned::<std::arch::x86_64::__m256, f32>(p)
    }
}

impl WeightElem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_avx2(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let raw = read_unaligned::<__m128i, Self>(p);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
    }
}

impl WeightElem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_avx2(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(read_unaligned::<__m128i, Self>(p))
    }
}

impl WeightElem for F8E4M3 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        e4m3_to_f32(self.0)
    }

    /// The 7 exponent-and-mantissa bits shifted to f32's bits 20..27 read as an f32 whose
    /// exponent is biased by 127 (a subnormal for E4M3's subnormals); times 2^120 that is the
    /// E4M3 value with its bias of 7, subnormals exact. The sign goes to bit 31 and the NaN
    /// codes (S.1111.111) become NaN, so every code widens to exactly [`e4m3_to_f32`].
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_avx2(p: *const F8E4M3) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let codes = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(read_unaligned::<i64, Self>(p)));
        let magnitude = _mm256_and_si256(codes, _mm256_set1_epi32(0x7f));
        let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(codes, _mm256_set1_epi32(0x80)));
        let rebias = _mm256_set1_ps(f32::from_bits((127 + 120) << 23));
        let value = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32::<20>(magnitude)), rebias);
        let is_nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(magnitude, _mm256_set1_epi32(0x7f)));
        let value = _mm256_blendv_ps(value, _mm256_set1_ps(f32::NAN), is_nan);
        _mm256_or_ps(value, _mm256_castsi256_ps(sign))
    }
}

/// Vector operations over 8 f32 lanes.
///
/// # Safety
/// Every method is `unsafe`: pointers must be valid for 8 elements, and the back end's
/// instruction set must be available (callers run these inside a matching
/// `#[target_feature]` function).
pub trait Simd: Copy {
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn load_w<W: WeightElem>(p: *const W) -> Self::V;
    /// `a * b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn hsum(v: Self::V) -> f32;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
}

/// AVX2 + FMA + F16C.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    type V = std::arch::x86_64::__m256;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn zero() -> Self::V {
        std::arch::x86_64::_mm256_setzero_ps()
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const f32) -> Self::V {
        read_unaligned::<Self::V, f32>(p)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_w<W: WeightElem>(p: *const W) -> Self::V {
        W::load8_avx2(p)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::x86_64::_mm256_fmadd_ps(a, b, c)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: Self::V) -> f32 {
        use std::arch::x86_64::*;
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn splat(v: f32) -> Self::V {
        std::arch::x86_64::_mm256_set1_ps(v)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::arch::x86_64::_mm256_add_ps(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store(p: *mut f32, v: Self::V) {
        write_unaligned(p, v)
    }
}

/// Plain Rust over `[f32; 8]`; the compiler vectorises it for the build target.
#[derive(Clone, Copy)]
pub struct Portable;

impl Simd for Portable {
    type V = [f32; 8];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        read_unaligned::<[f32; 8], f32>(p)
    }

    #[inline(always)]
    unsafe fn load_w<W: WeightElem>(p: *const W) -> Self::V {
        let raw = read_unaligned::<[W; 8], W>(p);
        raw.map(W::to_f32)
    }

    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut out = c;
        for i in 0..8 {
            out[i] += a[i] * b[i];
        }
        out
    }

    #[inline(always)]
    unsafe fn hsum(v: Self::V) -> f32 {
        ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        [v; 8]
    }

    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        let mut out = a;
        for i in 0..8 {
            out[i] += b[i];
        }
        out
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        write_unaligned(p, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widen_all<S: Simd, W: WeightElem>(src: &[W; 8]) -> f32 {
        // SAFETY: `src` holds 8 elements; callers check the instruction set.
        unsafe { S::hsum(S::fma(S::load_w(src.as_ptr()), S::load([1.0; 8].as_ptr()), S::zero())) }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 * b.abs().max(1.0)
    }

    #[test]
    fn widening_matches_half() {
        let vals = [0.5f32, -1.25, 3.0, 1e-3, -7.5, 65504.0, 0.0, 2.0];
        let want: f32 = vals.iter().sum();
        let b = vals.map(bf16::from_f32);
        let h = vals.map(f16::from_f32);
        let want_b: f32 = b.iter().map(|v| v.to_f32()).sum();
        let want_h: f32 = h.iter().map(|v| v.to_f32()).sum();
        assert!(close(widen_all::<Portable, f32>(&vals), want));
        assert!(close(widen_all::<Portable, bf16>(&b), want_b));
        assert!(close(widen_all::<Portable, f16>(&h), want_h));
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx2Fma {
            assert!(close(widen_all::<Avx2, f32>(&vals), want));
            assert!(close(widen_all::<Avx2, bf16>(&b), want_b));
            assert!(close(widen_all::<Avx2, f16>(&h), want_h));
        }
    }

    #[test]
    fn every_e4m3_code_widens_exactly() {
        let codes: Vec<F8E4M3> = (0..=255u8).map(F8E4M3).collect();
        let same = |got: f32, code: F8E4M3| {
            let want = e4m3_to_f32(code.0);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "code {code:?}: {got} != {want}"
            );
        };
        for chunk in codes.chunks_exact(8) {
            for &c in chunk {
                same(WeightElem::to_f32(c), c);
            }
            #[cfg(target_arch = "x86_64")]
            if Isa::detect() == Isa::Avx2Fma {
                let mut lanes = [0f32; 8];
                // SAFETY: `chunk` holds 8 codes and the CPU has AVX2 (checked above).
                unsafe { Avx2::store(lanes.as_mut_ptr(), Avx2::load_w(chunk.as_ptr())) };
                for (&got, &c) in lanes.iter().zip(chunk) {
                    same(got, c);
                }
            } else {
                eprintln!("no AVX2 on this CPU: only the portable widening was checked");
            }
        }
    }
}
