//! FP8 E4M3 ("e4m3fn": 1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities,
//! NaN = `S.1111.111`, largest finite ±448): the one place where f32 and E4M3 convert, used by
//! the loaders, the CPU kernels, the conformance reference and `rtllm quantize`.
//!
//! - [`e4m3_to_f32`] is exact (every E4M3 value is an f32); codes `0x7F` and `0xFF` are NaN.
//! - [`f32_to_e4m3`] rounds to nearest, ties to even, and **saturates**: a finite value or an
//!   infinity beyond ±448 becomes ±448 (`0x7E`/`0xFE`). That is bit for bit
//!   `x.clamp(finfo.min, finfo.max).to(torch.float8_e4m3fn)`, the way llm-compressor,
//!   ModelOpt and vLLM quantize (they clamp before the cast because torch's bare cast has not
//!   always saturated: c10's scalar conversion turns |x| ≥ 480 into NaN). NaN stays NaN with
//!   its sign (`0x7F`/`0xFF`); callers that must not produce NaN check their input (scales are
//!   checked at load).
//! - Values below the smallest subnormal (2^-9) round to ±0, keeping the sign.

use crate::dtype::{DType, Element};

/// The largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// The smallest positive E4M3 value (a subnormal, 2^-9).
pub const E4M3_MIN_SUBNORMAL: f32 = 1.0 / 512.0;

/// One E4M3 value as stored: its byte. Plain data, so tensors of [`DType::F8_E4M3`] can be
/// viewed as `&[F8E4M3]`; every byte is a valid value (two of them NaN).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F8E4M3(pub u8);

// SAFETY: a `repr(transparent)` wrapper of `u8`: no padding, every bit pattern is a value.
unsafe impl bytemuck::Zeroable for F8E4M3 {}
// SAFETY: as above; `u8` is `Pod` and the wrapper adds nothing.
unsafe impl bytemuck::Pod for F8E4M3 {}

impl Element for F8E4M3 {
    const DTYPE: DType = DType::F8_E4M3;
}

impl F8E4M3 {
    /// Rounds (nearest, ties to even) and saturates `x`; see the module comment.
    #[inline]
    pub fn from_f32(x: f32) -> F8E4M3 {
        F8E4M3(f32_to_e4m3(x))
    }

    /// The exact value.
    #[inline]
    pub fn to_f32(self) -> f32 {
        e4m3_to_f32(self.0)
    }
}

/// The value of every code, computed once at compile time.
static DECODE: [f32; 256] = decode_table();

const fn decode_code(code: u8) -> f32 {
    let negative = code & 0x80 != 0;
    let exp = ((code >> 3) & 0x0f) as u32;
    let man = (code & 0x07) as u32;
    let magnitude = if exp == 0x0f && man == 0x07 {
        f32::NAN
    } else if exp == 0 {
        // Subnormal: man * 2^-9, exact in f32.
        man as f32 * E4M3_MIN_SUBNORMAL
    } else {
        // Normal: (1 + man / 8) * 2^(exp - 7); rebias the exponent from 7 to 127.
        f32::from_bits(((exp + 120) << 23) | (man << 20))
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

const fn decode_table() -> [f32; 256] {
    let mut table = [0f32; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = decode_code(code as u8);
        code += 1;
    }
    table
}

/// The exact value of an E4M3 code (NaN for `0x7F` and `0xFF`).
#[inline]
pub fn e4m3_to_f32(code: u8) -> f32 {
    DECODE[code as usize]
}

/// Bits of 448.0, the saturation threshold.
const MAX_BITS: u32 = 0x43e0_0000;
/// Bits of 2^-6, the smallest normal E4M3 value.
const MIN_NORMAL_BITS: u32 = 121 << 23;
/// Bits of 2^14: adding it to a value below 2^-6 leaves the value in units of 2^-9 (the
/// subnormal step) in the low mantissa bits, rounded to nearest even by the FPU.
const SUBNORMAL_MAGIC_BITS: u32 = 141 << 23;

/// f32 → E4M3: round to nearest, ties to even, saturating at ±448; NaN stays NaN.
#[inline]
pub fn f32_to_e4m3(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        return sign | 0x7f;
    }
    if abs >= MAX_BITS {
        return sign | 0x7e;
    }
    if abs < MIN_NORMAL_BITS {
        let shifted = f32::from_bits(abs) + f32::from_bits(SUBNORMAL_MAGIC_BITS);
        return sign | (shifted.to_bits() - SUBNORMAL_MAGIC_BITS) as u8;
    }
    // Normal: rebias the exponent (127 → 7) and round the 20 dropped mantissa bits to nearest
    // even (add half an ulp minus one, plus the kept lowest bit). abs ≥ 2^-6 keeps it positive.
    let odd = (abs >> 20) & 1;
    let rounded = abs - (120 << 23) + 0x7ffff + odd;
    sign | (rounded >> 20) as u8
}

/// Decodes `src` into `dst` (same length).
pub fn decode_slice(src: &[u8], dst: &mut [f32]) {
    for (o, &c) in dst.iter_mut().zip(src) {
        *o = e4m3_to_f32(c);
    }
}

/// Encodes `src` into `dst` (same length): [`f32_to_e4m3`] of each value.
pub fn encode_slice(src: &[f32], dst: &mut [u8]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = f32_to_e4m3(v);
    }
}

/// Quantizes `x` with a scale as every FP8 recipe does: `e4m3(x / scale)`, saturating.
#[inline]
pub fn quantize_scaled(x: f32, scale: f32) -> u8 {
    f32_to_e4m3(x / scale)
}

/// The scale that maps a row's largest magnitude onto ±448 (dynamic per-token activation
/// quantization, as vLLM's `dynamic_per_token_scaled_fp8_quant`): `amax / 448`, with `amax`
/// first capped at `upper_bound` when one is given (fbgemm's `activation_scale_ub`) and the
/// result kept at least `1 / (448 * 512)` so an all-zero row divides by a positive number.
pub fn dynamic_scale(row: &[f32], upper_bound: Option<f32>) -> f32 {
    let mut amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if let Some(ub) = upper_bound {
        amax = amax.min(ub);
    }
    (amax / E4M3_MAX).max(MIN_DYNAMIC_SCALE)
}

/// The floor of a dynamic scale (vLLM's `min_scaling_factor`).
pub const MIN_DYNAMIC_SCALE: f32 = 1.0 / (E4M3_MAX * 512.0);

#[cfg(test)]
mod tests;
