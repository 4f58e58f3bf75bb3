//! TEMPORARY: f32 <-> FP8 E4M3 ("e4m3fn") until branch `fp8-formats` lands
//! `rtllm_plugin_api::fp8` with the same two functions; this file is then deleted and its
//! callers import those. Semantics as `x.clamp(-448, 448).to(torch.float8_e4m3fn)`: saturate
//! to ±448, round to nearest with ties to even, NaN stays NaN (0x7F / 0xFF).

use rtllm_plugin_api::DType;

/// The dtype FP8 codes are stored as: `U8` here, `DType::F8_E4M3` (safetensors `F8_E4M3`)
/// once it exists.
pub const E4M3_STORAGE: DType = DType::U8;

/// The largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// f32 → E4M3 code: saturating, round to nearest even.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return sign | 0x7F;
    }
    let a = x.abs().min(E4M3_MAX);
    // Subnormals (and zero): multiples of 2^-9 below 2^-6; 8 * 2^-9 is the smallest normal,
    // whose code (0x08) continues the subnormal codes, so rounding up into it is exact.
    if a < 2f32.powi(-6) {
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let bits = a.to_bits();
    let exponent = (bits >> 23) as i32 - 127;
    let mantissa = bits & 0x7F_FFFF;
    let mut code = (((exponent + 7) as u32) << 3) | (mantissa >> 20);
    let rest = mantissa & 0xF_FFFF;
    if rest > 0x8_0000 || (rest == 0x8_0000 && code & 1 == 1) {
        code += 1; // a carry into the exponent is the next binade, as it should be
    }
    sign | code as u8
}

/// E4M3 code → f32 (exact).
pub fn e4m3_to_f32(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((code >> 3) & 0xF);
    let mantissa = f32::from(code & 7);
    if exponent == 15 && code & 7 == 7 {
        return f32::NAN;
    }
    if exponent == 0 {
        return sign * mantissa * 2f32.powi(-9);
    }
    sign * (1.0 + mantissa / 8.0) * 2f32.powi(exponent - 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_rounding_is_to_nearest_even() {
        for code in 0..=255u8 {
            let v = e4m3_to_f32(code);
            if v.is_nan() {
                assert_eq!(code & 0x7F, 0x7F);
                continue;
            }
            // -0.0 keeps its sign bit.
            assert_eq!(f32_to_e4m3(v), code, "code {code:#04x} = {v}");
        }
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(f32_to_e4m3(1e9), 0x7E);
        assert_eq!(f32_to_e4m3(-f32::INFINITY), 0xFE);
        assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
        // Ties: 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): even → 1.0;
        // 1.1875 between 1.125 and 1.25 (0x3A): even → 1.25.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
        // Subnormal tie: 2^-10 is halfway between 0 and 2^-9 → 0.
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00);
        assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 0x02);
        // Just above 448's halfway point to 480 still saturates to 448.
        assert_eq!(f32_to_e4m3(470.0), 0x7E);
    }
}
