//! GGUF block formats, bit-exact with llama.cpp's ggml (`ggml-quants.c`): row dequantization
//! to f32 and the reference quantizers (`quantize_row_*_ref`) for Q8_0, Q4_0, Q4_1, Q4_K and
//! Q6_K, plus plain F32/F16/BF16 rows stored as little-endian bytes, and FP8 E4M3 and i8
//! rows as their stored values (their scale tensors are applied by the caller).
//!
//! Block layouts (all little-endian, packed):
//! - `block_q8_0` (32 elements, 34 bytes): `f16 d; i8 qs[32]`; value `qs[j] * d`.
//! - `block_q4_0` (32 elements, 18 bytes): `f16 d; u8 qs[16]`; low nibbles are elements 0..16,
//!   high nibbles 16..32; value `(q - 8) * d`.
//! - `block_q4_1` (32 elements, 20 bytes): `f16 d, m; u8 qs[16]`; value `q * d + m`.
//! - `block_q4_K` and `block_q6_K` (256 elements): see [`kquants`].
//!
//! Dequantization reproduces ggml's arithmetic operation for operation (f16 → f32 scale, the
//! same multiplication order), so results are bit-identical to ggml's scalar path.

mod kquants;

pub use kquants::{get_scale_min_k4, K_SCALE_SIZE, QK_K};

use crate::{dtype::DType, error::PluginError};
use half::{bf16, f16};

/// Elements per Q8_0 / Q4_0 / Q4_1 block.
pub const QK: usize = 32;

/// Reads a little-endian f16 at `b[at..at + 2]` as f32.
#[inline]
pub fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Writes `v` rounded to f16 (round to nearest even, as `GGML_FP32_TO_FP16`) at `b[at..at + 2]`.
#[inline]
pub fn write_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// ggml's `nearest_int`: round to nearest, ties to even, via the 1.5 * 2^23 trick (exact for
/// |x| <= 4194303). Larger or non-finite values fall back to a saturating round.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    if x.abs() <= 4_194_303.0 {
        let v = x + 12_582_912.0;
        ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
    } else {
        x.round() as i32
    }
}

/// Bytes a row of `n` elements of `dtype` occupies, or an error when `n` is not a whole number
/// of blocks.
pub fn row_bytes(dtype: DType, n: usize) -> Result<usize, PluginError> {
    dtype.bytes_for(n).ok_or_else(|| {
        PluginError::new(format!(
            "{dtype}: a row of {n} elements is not a whole number of {}-element blocks",
            dtype.block_size()
        ))
    })
}

/// Checks the element count is whole blocks and the byte count matches it.
fn check_lengths(dtype: DType, op: &str, elements: usize, bytes: usize) -> Result<(), PluginError> {
    let want = row_bytes(dtype, elements).map_err(|e| e.context(op))?;
    if want != bytes {
        return Err(PluginError::new(format!("{op} {dtype}: {elements} elements need {want} bytes, got {bytes}")));
    }
    Ok(())
}

fn unsupported(op: &str, dtype: DType) -> PluginError {
    PluginError::new(format!("{op}: dtype {dtype} is not a float, FP8, i8 or GGUF block format"))
}

/// Dequantizes one row of `dtype` (`src`, raw little-endian bytes) into `dst` (f32). The row
/// length is `dst.len()`; it must be a whole number of blocks and `src` exactly its bytes.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), PluginError> {
    check_lengths(dtype, "dequantize", dst.len(), src.len())?;
    match dtype {
        DType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::Q8_0 => blocks(src, dst, 34, QK, dequant_q8_0),
        DType::Q4_0 => blocks(src, dst, 18, QK, dequant_q4_0),
        DType::Q4_1 => blocks(src, dst, 20, QK, dequant_q4_1),
        DType::Q4_K => blocks(src, dst, 144, QK_K, kquants::dequant_q4_k),
        DType::Q6_K => blocks(src, dst, 210, QK_K, kquants::dequant_q6_k),
        // The stored values; the scale tensors beside them are applied by the caller.
        DType::F8_E4M3 => crate::fp8::decode_slice(src, dst),
        DType::I8 => {
            for (o, &c) in dst.iter_mut().zip(src) {
                *o = (c as i8) as f32;
            }
        }
        DType::I32 | DType::I64 | DType::U8 => return Err(unsupported("dequantize", dtype)),
    }
    Ok(())
}

/// Quantizes (or converts) one f32 row into `dtype`'s byte layout, as ggml's
/// `quantize_row_*_ref`. `dst` must be exactly the row's byte size.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), PluginError> {
    check_lengths(dtype, "quantize", src.len(), dst.len())?;
    match dtype {
        DType::F32 => {
            for (c, v) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        DType::BF16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        DType::Q8_0 => blocks_mut(src, dst, 34, QK, quant_q8_0),
        DType::Q4_0 => blocks_mut(src, dst, 18, QK, quant_q4_0),
        DType::Q4_1 => blocks_mut(src, dst, 20, QK, quant_q4_1),
        DType::Q4_K => blocks_mut(src, dst, 144, QK_K, kquants::quant_q4_k),
        DType::Q6_K => blocks_mut(src, dst, 210, QK_K, kquants::quant_q6_k),
        // Values already divided by their scale: round to nearest even and saturate.
        DType::F8_E4M3 => crate::fp8::encode_slice(src, dst),
        DType::I8 => {
            for (o, v) in dst.iter_mut().zip(src) {
                // torch's `x.round().clamp(-128, 127).to(torch.int8)`; NaN becomes 0.
                *o = (v.round_ties_even().clamp(-128.0, 127.0) as i8) as u8;
            }
        }
        DType::I32 | DType::I64 | DType::U8 => return Err(unsupported("quantize", dtype)),
    }
    Ok(())
}

/// Quantizes a row into a freshly allocated byte vector.
pub fn quantize_row_to_vec(dtype: DType, src: &[f32]) -> Result<Vec<u8>, PluginError> {
    let mut out = vec![0u8; row_bytes(dtype, src.len())?];
    quantize_row(dtype, src, &mut out)?;
    Ok(out)
}

/// Dequantizes a row of `n` elements into a freshly allocated vector.
pub fn dequantize_row_to_vec(dtype: DType, src: &[u8], n: usize) -> Result<Vec<f32>, PluginError> {
    let mut out = vec![0f32; n];
    dequantize_row(dtype, src, &mut out)?;
    Ok(out)
}

fn blocks(src: &[u8], dst: &mut [f32], bb: usize, bs: usize, f: fn(&[u8], &mut [f32])) {
    for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(bs)) {
        f(b, y);
    }
}

fn blocks_mut(src: &[f32], dst: &mut [u8], bb: usize, bs: usize, f: fn(&[f32], &mut [u8])) {
    for (x, b) in src.chunks_exact(bs).zip(dst.chunks_exact_mut(bb)) {
        f(x, b);
    }
}

fn dequant_q8_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for (o, &q) in y.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let (lo, hi) = y.split_at_mut(QK / 2);
    for (j, &q) in b[2..18].iter().enumerate() {
        lo[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        hi[j] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let m = read_f16(b, 2);
    let (lo, hi) = y.split_at_mut(QK / 2);
    for (j, &q) in b[4..20].iter().enumerate() {
        lo[j] = (q & 0x0f) as f32 * d + m;
        hi[j] = (q >> 4) as f32 * d + m;
    }
}

fn quant_q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(b, 0, d);
    for (o, v) in b[2..34].iter_mut().zip(x) {
        *o = ((v * id).round() as i8) as u8;
    }
}

fn quant_q4_0(x: &[f32], b: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(b, 0, d);
    for j in 0..QK / 2 {
        // ggml: MIN(15, (int8_t)(x*id + 8.5f)); the cast truncates toward zero.
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
        b[2 + j] = (q0 & 0x0f) | (q1 << 4);
    }
}

fn quant_q4_1(x: &[f32], b: &mut [u8]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        min = if v < min { v } else { min };
        max = if v > max { v } else { max };
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(b, 0, d);
    write_f16(b, 2, min);
    for j in 0..QK / 2 {
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
        b[4 + j] = (q0 & 0x0f) | (q1 << 4);
    }
}

#[cfg(test)]
mod tests;
