//! Branch-free f32 math the compiler can vectorise: `exp` by range reduction to 2^n · e^r
//! with a degree-6 polynomial for e^r (relative error about 2e-7 over the clamped range), and
//! the GELU-tanh formula written through it.

/// √(2/π), the constant of the tanh approximation.
pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
pub const CUBIC: f32 = 0.044_715;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in a high part exact in f32 and the rest, so `x - n·ln2` loses nothing.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
// 1.5 · 2^23: adding and subtracting it rounds an f32 to the nearest integer, branch-free.
const ROUNDER: f32 = 12_582_912.0;

/// e^x: accurate on [-87, 88], 0 below -87 (where f32 would go subnormal), e^88 above, NaN
/// for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUNDER) - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients of e^r for |r| <= ln2/2, in Horner form.
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n by building the exponent bits (n is in [-126, 127] after the clamp).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

/// GELU, tanh approximation: `0.5·x·(1 + tanh(u))` with `u = √(2/π)·(x + 0.044715·x³)`,
/// computed as `x · sigmoid(2u)`, the same value without a tanh. The sigmoid takes `e^-|2u|`
/// (which never overflows), so large |x| give x or 0 exactly as the definition does.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let two_u = 2.0 * SQRT_2_OVER_PI * x * (1.0 + CUBIC * x * x);
    let e = exp(-two_u.abs());
    let r = 1.0 / (1.0 + e);
    let sigmoid = if two_u >= 0.0 { r } else { e * r };
    x * sigmoid
}
