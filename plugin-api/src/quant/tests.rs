//! Tests of the GGUF block formats: hand-built blocks with known values, round trips with
//! error bounds, length checks.

use super::*;

/// A small deterministic generator (xorshift) for test data; values roughly normal-ish.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn gauss(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (0..4).map(|_| self.next_f32()).sum::<f32>() * 0.5).collect()
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

fn rel_rmse(a: &[f32], b: &[f32]) -> f32 {
    let err: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f32 = a.iter().map(|x| x * x).sum();
    (err / norm).sqrt()
}

fn round_trip(dtype: DType, x: &[f32]) -> Vec<f32> {
    let q = quantize_row_to_vec(dtype, x).unwrap();
    assert_eq!(q.len(), dtype.bytes_for(x.len()).unwrap());
    dequantize_row_to_vec(dtype, &q, x.len()).unwrap()
}

#[test]
fn q8_0_hand_built_block() {
    let mut b = vec![0u8; 34];
    b[..2].copy_from_slice(&f16_bytes(0.25));
    for j in 0..32 {
        b[2 + j] = (j as i8 - 16) as u8;
    }
    let y = dequantize_row_to_vec(DType::Q8_0, &b, 32).unwrap();
    for (j, v) in y.iter().enumerate() {
        assert_eq!(*v, (j as f32 - 16.0) * 0.25);
    }
    // Quantizing exactly representable values gives back the same block.
    let x: Vec<f32> = (0..32).map(|j| (j as f32 - 16.0) * 0.25).collect();
    let mut x127 = x.clone();
    x127[0] = -127.0 * 0.25; // amax / 127 == 0.25 exactly
    let q = quantize_row_to_vec(DType::Q8_0, &x127).unwrap();
    assert_eq!(&q[..2], &f16_bytes(0.25));
    assert_eq!(q[2] as i8, -127);
    assert_eq!(&q[3..], &b[3..]);
}

#[test]
fn q4_0_hand_built_block() {
    let mut b = vec![0u8; 18];
    b[..2].copy_from_slice(&f16_bytes(1.5));
    for j in 0..16 {
        b[2 + j] = (j as u8) | ((15 - j as u8) << 4);
    }
    let y = dequantize_row_to_vec(DType::Q4_0, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 1.5, "low nibble {j}");
        assert_eq!(y[j + 16], (7.0 - j as f32) * 1.5, "high nibble {j}");
    }
    // ggml's quantizer picks d = max / -8 where max is the value of largest magnitude.
    let q = quantize_row_to_vec(DType::Q4_0, &y).unwrap();
    assert_eq!(read_f16(&q, 0), 1.5);
    assert_eq!(dequantize_row_to_vec(DType::Q4_0, &q, 32).unwrap(), y);
}

#[test]
fn q4_1_hand_built_block() {
    let mut b = vec![0u8; 20];
    b[..2].copy_from_slice(&f16_bytes(0.5));
    b[2..4].copy_from_slice(&f16_bytes(-2.0));
    for j in 0..16 {
        b[4 + j] = (j as u8) | (3 << 4);
    }
    let y = dequantize_row_to_vec(DType::Q4_1, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(y[j], j as f32 * 0.5 - 2.0);
        assert_eq!(y[16 + j], 3.0 * 0.5 - 2.0);
    }
    let q = quantize_row_to_vec(DType::Q4_1, &y).unwrap();
    assert_eq!(read_f16(&q, 0), 0.5);
    assert_eq!(read_f16(&q, 2), -2.0);
    assert_eq!(&q[4..], &b[4..]);
}

/// Packs eight 6-bit (scale, min) pairs the way `quantize_row_q4_K_ref` does.
fn pack_q4k_scales(sm: &[(u8, u8); 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &(ls, lm)) in sm.iter().enumerate() {
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    s
}

#[test]
fn q4_k_scale_packing_round_trips() {
    for a in 0..64u8 {
        let sm: [(u8, u8); 8] = std::array::from_fn(|j| ((a + 7 * j as u8) % 64, (63 - a + 3 * j as u8) % 64));
        let packed = pack_q4k_scales(&sm);
        for (j, want) in sm.iter().enumerate() {
            assert_eq!(get_scale_min_k4(j, &packed), *want);
        }
    }
}

#[test]
fn q4_k_hand_built_block() {
    let sm: [(u8, u8); 8] = std::array::from_fn(|j| (10 + j as u8 * 7, 60 - j as u8 * 5));
    let mut b = vec![0u8; 144];
    b[..2].copy_from_slice(&f16_bytes(0.5));
    b[2..4].copy_from_slice(&f16_bytes(0.25));
    b[4..16].copy_from_slice(&pack_q4k_scales(&sm));
    for i in 0..128 {
        b[16 + i] = ((i % 16) as u8) | (((i * 3) % 16) as u8) << 4;
    }
    let y = dequantize_row_to_vec(DType::Q4_K, &b, 256).unwrap();
    for chunk in 0..4 {
        for l in 0..32 {
            let q = b[16 + 32 * chunk + l];
            let (s0, m0) = sm[2 * chunk];
            let (s1, m1) = sm[2 * chunk + 1];
            assert_eq!(y[64 * chunk + l], 0.5 * s0 as f32 * (q & 15) as f32 - 0.25 * m0 as f32);
            assert_eq!(y[64 * chunk + 32 + l], 0.5 * s1 as f32 * (q >> 4) as f32 - 0.25 * m1 as f32);
        }
    }
}

#[test]
fn q6_k_hand_built_block() {
    let mut b = vec![0u8; 210];
    // 6-bit quants q[i] = i % 64, laid out as quantize_row_q6_K_ref does.
    let l: Vec<u8> = (0..256).map(|i| (i % 64) as u8).collect();
    for half in 0..2 {
        for j in 0..32 {
            let q = |k: usize| l[128 * half + j + 32 * k];
            b[64 * half + j] = (q(0) & 15) | ((q(2) & 15) << 4);
            b[64 * half + j + 32] = (q(1) & 15) | ((q(3) & 15) << 4);
            b[128 + 32 * half + j] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
    let scales: Vec<i8> = (0..16).map(|i: i32| (i * 9 - 70) as i8).collect();
    for (i, s) in scales.iter().enumerate() {
        b[192 + i] = *s as u8;
    }
    b[208..210].copy_from_slice(&f16_bytes(0.125));
    let y = dequantize_row_to_vec(DType::Q6_K, &b, 256).unwrap();
    for (i, v) in y.iter().enumerate() {
        let want = 0.125 * scales[i / 16] as f32 * (l[i] as f32 - 32.0);
        assert_eq!(*v, want, "element {i}");
    }
}

#[test]
fn round_trips_stay_within_error_bounds() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let x = rng.gauss(4096);
    // Relative RMS error bounds for roughly Gaussian data (ggml's own tests see ~0.004 for
    // q8_0, ~0.1 for 4-bit formats and ~0.03 for q6_k).
    for (dtype, bound) in [
        (DType::F32, 0.0),
        (DType::F16, 1e-3),
        (DType::BF16, 5e-3),
        (DType::Q8_0, 0.01),
        (DType::Q4_0, 0.12),
        (DType::Q4_1, 0.1),
        (DType::Q4_K, 0.09),
        (DType::Q6_K, 0.03),
    ] {
        let y = round_trip(dtype, &x);
        let e = rel_rmse(&x, &y);
        assert!(e <= bound, "{dtype}: relative rmse {e} > {bound}");
    }
}

#[test]
fn q8_0_per_element_error_is_half_a_step() {
    let mut rng = Rng(42);
    let x = rng.gauss(1024);
    let y = round_trip(DType::Q8_0, &x);
    for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let step = amax / 127.0;
        for (a, b) in xb.iter().zip(yb) {
            // half a step plus the f16 rounding of the scale (at most 127 * d * 2^-11)
            assert!((a - b).abs() <= step * 0.5 + amax * 1e-3 + 1e-7, "{a} vs {b}");
        }
    }
}

#[test]
fn k_quants_handle_offsets_and_constant_blocks() {
    let mut rng = Rng(7);
    // Shifted data exercises the Q4_K min; a block of zeros and a constant block the
    // degenerate paths.
    let mut x: Vec<f32> = rng.gauss(256).iter().map(|v| v + 3.0).collect();
    x.extend(std::iter::repeat_n(0.0, 256));
    x.extend(std::iter::repeat_n(-0.75, 256));
    for (dtype, bound) in [(DType::Q4_K, 0.03), (DType::Q6_K, 0.02)] {
        let y = round_trip(dtype, &x);
        let e = rel_rmse(&x[..256], &y[..256]);
        assert!(e < bound, "{dtype}: {e}");
        assert!(y[256..512].iter().all(|v| *v == 0.0), "{dtype}: zeros");
        for v in &y[512..] {
            assert!((v + 0.75).abs() < 0.02, "{dtype}: constant block gave {v}");
        }
    }
}

#[test]
fn quantizers_never_panic_on_odd_values() {
    let mut x = vec![0f32; 256];
    x[0] = f32::NAN;
    x[1] = f32::INFINITY;
    x[2] = -1e30;
    x[3] = 1e-30;
    for dtype in DType::QUANTIZED {
        let q = quantize_row_to_vec(dtype, &x).unwrap();
        dequantize_row_to_vec(dtype, &q, 256).unwrap();
    }
}

#[test]
fn float_rows_are_little_endian() {
    let x = [1.0f32, -2.5, 0.0, 65504.0];
    let b = quantize_row_to_vec(DType::F32, &x).unwrap();
    assert_eq!(&b[4..8], &(-2.5f32).to_le_bytes());
    assert_eq!(dequantize_row_to_vec(DType::F32, &b, 4).unwrap(), x);
    let h = quantize_row_to_vec(DType::F16, &x).unwrap();
    assert_eq!(&h[2..4], &f16_bytes(-2.5));
    assert_eq!(dequantize_row_to_vec(DType::F16, &h, 4).unwrap(), x);
    let bf = quantize_row_to_vec(DType::BF16, &[1.0, -2.5]).unwrap();
    assert_eq!(bf, vec![0x80, 0x3f, 0x20, 0xc0]);
}

#[test]
fn lengths_are_checked() {
    let mut out = vec![0f32; 32];
    let err = dequantize_row(DType::Q4_0, &[0u8; 17], &mut out).unwrap_err();
    assert!(err.message().contains("need 18 bytes, got 17"), "{err}");
    let err = dequantize_row(DType::Q4_K, &[0u8; 18], &mut out).unwrap_err();
    assert!(err.message().contains("not a whole number of 256-element blocks"), "{err}");
    let err = quantize_row(DType::Q8_0, &[0f32; 33], &mut [0u8; 34]).unwrap_err();
    assert!(err.message().contains("33 elements"), "{err}");
    let err = quantize_row(DType::I32, &[0f32; 4], &mut [0u8; 16]).unwrap_err();
    assert!(err.message().contains("i32"), "{err}");
    assert_eq!(row_bytes(DType::Q6_K, 512).unwrap(), 420);
}

#[test]
fn nearest_int_rounds_half_to_even() {
    assert_eq!(nearest_int(0.5), 0);
    assert_eq!(nearest_int(1.5), 2);
    assert_eq!(nearest_int(-2.5), -2);
    assert_eq!(nearest_int(-2.6), -3);
    assert_eq!(nearest_int(1e20), i32::MAX);
    assert_eq!(nearest_int(f32::NAN), 0);
}

/// The input of the golden vectors below (exact in f32): a sawtooth with a few spikes.
fn golden_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 + 11) % 101) as f32 / 16.0 - 3.0 + if i % 64 < 5 { 4.0 } else { 0.0 }).collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Bytes produced by gguf-py 0.19 (`gguf.quants.quantize`, which llama.cpp tests against
/// ggml's `quantize_row_*_ref`) for `golden_input(64)`.
#[test]
fn quantizers_match_ggml_reference_bytes() {
    let x = golden_input(64);
    for (dtype, want) in [
        (DType::Q8_0, "5d2a22507f2f5d3beb19c9f726d50432e2103fee1dccfb29d90836e614c4f221d0ff8d2658bc1670d42e92ec47ab055fc31d78db3699f44eb20c67ca257fe33da1fb55b9"),
        (DType::Q4_0, "50ba469360b58254a9865ba976cb9865ba8780b652ec9731db752fb9640da842ec8630ca"),
        (DType::Q4_1, "f73800c2a83b7f194c8a235790346801457912567736a0c1ad0368ce248ad0469bf257bd1379cf25"),
    ] {
        assert_eq!(quantize_row_to_vec(dtype, &x).unwrap(), hex(want), "{dtype}");
    }
}

/// K-quant blocks (from our quantizer on `golden_input(256)`) and the FNV-1a hash of the f32
/// little-endian bytes that gguf-py 0.19's `gguf.quants.dequantize` produces for them.
#[test]
fn k_quant_dequantization_matches_ggml_reference() {
    let x = golden_input(256);
    for (dtype, block, want_hash) in [
        (DType::Q4_K, "3421f229fda9ffa6fffbfafd96cacfe7c72b8fd84c990357b01478c13589e246aa0367b12478d23599e356a01467c1254baf096cc61377d13498f255b90366c02487e13598f256b91377d02488e145a9a71b6fc82c89d2469a0357b01478c13589e246aa0367b02478d1359ae257ab132a8ee84baf0266b01377d13498f245a90366c02487d13598f256b91367c02488", 0x7603e6c089a9a4b7u64),
        (DType::Q6_K, "b70c3084b93185ba0e5287db2f53a8dc41d942ea73eb831c851d862eb720c85139b21a922c840d85ed77ff57d038b04a53e973fd831d972da731b731c751db61ea3d60b70a63baed3086b9005386dc2fb93fc943d963e973fd830d971da731b7c145cf28ac169f137df07ae367e14aced953da73fa740d840ea72eb831b851d8418c1441d8259ee9229ee5529d2552e9e44e39934e249349e49239e74e39934e0d80d44d80295ee52952e52f92e95e91e49239e44e39d34e249349e49239e44e89c4c6c180c239c496c136c281c53ac6d216", 0x86780ab28a5abfe7u64),
    ] {
        let block = hex(block);
        assert_eq!(quantize_row_to_vec(dtype, &x).unwrap(), block, "{dtype} quantizer changed");
        let y = dequantize_row_to_vec(dtype, &block, 256).unwrap();
        assert_eq!(fnv1a(y.iter().flat_map(|v| v.to_le_bytes())), want_hash, "{dtype}");
    }
}

#[test]
fn fp8_and_i8_rows_are_their_stored_values() {
    let codes = [0x00u8, 0x38, 0xb8, 0x7e, 0x01];
    let y = dequantize_row_to_vec(DType::F8_E4M3, &codes, 5).unwrap();
    assert_eq!(y, vec![0.0, 1.0, -1.0, 448.0, 1.0 / 512.0]);
    assert_eq!(quantize_row_to_vec(DType::F8_E4M3, &y).unwrap(), codes);
    assert_eq!(quantize_row_to_vec(DType::F8_E4M3, &[1000.0, -1e9]).unwrap(), vec![0x7e, 0xfe], "saturating");

    let ints = [0u8, 1, 0xff, 0x80, 0x7f];
    let y = dequantize_row_to_vec(DType::I8, &ints, 5).unwrap();
    assert_eq!(y, vec![0.0, 1.0, -1.0, -128.0, 127.0]);
    assert_eq!(quantize_row_to_vec(DType::I8, &y).unwrap(), ints);
    let q = quantize_row_to_vec(DType::I8, &[2.5, -2.5, 300.0, -300.0, f32::NAN]).unwrap();
    assert_eq!(q, vec![2, (-2i8) as u8, 127, (-128i8) as u8, 0], "ties to even, saturating, NaN to 0");
}
