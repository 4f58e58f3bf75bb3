//! The E4M3 conversions against torch (vectors written by scripts/reference/make_fp8_vectors.py
//! with `torch.float8_e4m3fn`: every code's value, and f32 → E4M3 for every rounding tie, the
//! values one f32 ulp either side of it, saturation, NaN, infinities, subnormals and random
//! values), plus properties that need no fixture.

use super::*;

const VECTORS: &str = include_str!("torch_vectors.txt");

/// (code, f32 bits of its value) and (f32 bits, code torch encodes them to).
type Decode = Vec<(u8, u32)>;
type Encode = Vec<(u32, u8)>;

/// The decode table and the encode cases parsed from the fixture.
fn vectors() -> (Decode, Encode) {
    let (mut decode, mut encode) = (Vec::new(), Vec::new());
    for line in VECTORS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| u32::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad hex {s:?} in {line:?}: {e}"));
        match f.as_slice() {
            ["decode", code, bits] => decode.push((hex(code) as u8, hex(bits))),
            ["encode", bits, code] => encode.push((hex(bits), hex(code) as u8)),
            _ => panic!("unexpected fixture line {line:?}"),
        }
    }
    (decode, encode)
}

#[test]
fn every_code_decodes_as_torch_does() {
    let (decode, _) = vectors();
    assert_eq!(decode.len(), 256, "the fixture holds every code");
    for (code, bits) in decode {
        let ours = e4m3_to_f32(code);
        let theirs = f32::from_bits(bits);
        if theirs.is_nan() {
            assert!(ours.is_nan(), "code {code:#04x}: torch NaN, ours {ours}");
        } else {
            assert_eq!(ours.to_bits(), bits, "code {code:#04x}: torch {theirs}, ours {ours}");
        }
    }
}

#[test]
fn encoding_matches_torch_clamp_then_cast_including_every_tie() {
    let (_, encode) = vectors();
    assert!(encode.len() > 2000, "the fixture has {} encode cases", encode.len());
    let mut ties = 0;
    for (bits, want) in encode {
        let x = f32::from_bits(bits);
        let got = f32_to_e4m3(x);
        assert_eq!(
            got,
            want,
            "{x:e} ({bits:#010x}): torch {want:#04x} ({}), ours {got:#04x} ({})",
            e4m3_to_f32(want),
            e4m3_to_f32(got)
        );
        // A tie: exactly between the chosen code and its neighbour of the same sign on x's side
        // (codes are sign-magnitude, so the neighbour in magnitude is one code up or down).
        let chosen = e4m3_to_f32(want);
        let neighbour = if x.abs() > chosen.abs() { want.wrapping_add(1) } else { want.wrapping_sub(1) };
        let other = e4m3_to_f32(neighbour);
        if x.is_finite() && x.abs() < E4M3_MAX && x != chosen && (x - chosen).abs() == (x - other).abs() {
            ties += 1;
            assert_eq!(want & 1, 0, "{x}: a tie goes to the even code");
        }
    }
    assert!(ties >= 250, "the fixture covers the ties between codes ({ties} found)");
}

#[test]
fn round_trip_of_every_finite_code() {
    for code in 0..=255u8 {
        let v = e4m3_to_f32(code);
        if v.is_nan() {
            assert_eq!(code & 0x7f, 0x7f);
            assert_eq!(f32_to_e4m3(v), code, "NaN keeps its sign");
        } else {
            assert_eq!(f32_to_e4m3(v), code, "{v}");
        }
    }
}

#[test]
fn saturation_specials_and_subnormals() {
    assert_eq!(e4m3_to_f32(0x7e), 448.0);
    assert_eq!(e4m3_to_f32(0x01), E4M3_MIN_SUBNORMAL);
    assert_eq!(e4m3_to_f32(0x08), 1.0 / 64.0);
    assert_eq!(e4m3_to_f32(0x38), 1.0);
    for (x, code) in [
        (448.0, 0x7e),
        (449.0, 0x7e),
        (470.0, 0x7e),
        (1e30, 0x7e),
        (f32::INFINITY, 0x7e),
        (f32::NEG_INFINITY, 0xfe),
        (-1e9, 0xfe),
        (0.0, 0x00),
        (-0.0, 0x80),
        (1e-30, 0x00),
        (-1e-30, 0x80),
        (E4M3_MIN_SUBNORMAL / 2.0, 0x00),
        (E4M3_MIN_SUBNORMAL * 1.5, 0x02),
        (E4M3_MIN_SUBNORMAL * 0.5000001, 0x01),
    ] {
        assert_eq!(f32_to_e4m3(x), code, "{x:e}");
    }
    assert_eq!(f32_to_e4m3(f32::NAN) & 0x7f, 0x7f);
    assert!(F8E4M3::from_f32(f32::NAN).to_f32().is_nan());
}

#[test]
fn scaled_and_dynamic_quantization() {
    assert_eq!(quantize_scaled(896.0, 2.0), 0x7e);
    assert_eq!(quantize_scaled(-1.0, 0.5), f32_to_e4m3(-2.0));
    let row = [0.5, -3.0, 1.0];
    assert_eq!(dynamic_scale(&row, None), 3.0 / 448.0);
    assert_eq!(dynamic_scale(&row, Some(1.5)), 1.5 / 448.0);
    assert_eq!(dynamic_scale(&[0.0; 4], None), MIN_DYNAMIC_SCALE);
    // The row's largest magnitude lands on ±448.
    let s = dynamic_scale(&row, None);
    assert_eq!(quantize_scaled(-3.0, s), 0xfe);
}
