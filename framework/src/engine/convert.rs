//! Weight dtype conversion at binding: quantized or float bytes to f32, bf16 or f16 (the float
//! fallback of weights no chosen kernel reads as stored).

use super::buffer::AlignedBuf;
use super::error::LoadError;
use rtllm_plugin_api::{quant, DType};

/// Converts a weight's stored bytes to `dtype` (f32, bf16 or f16 targets).
pub(crate) fn convert(
    name: &str,
    bytes: &[u8],
    from: DType,
    to: DType,
    row_len: usize,
) -> Result<AlignedBuf, LoadError> {
    let err = |message: String| LoadError::Weight { name: name.to_string(), message };
    if to != DType::F32 {
        let f32s = convert(name, bytes, from, DType::F32, row_len)?;
        return Ok(match to {
            DType::BF16 => narrow(f32s.as_f32(), |v| half::bf16::from_f32(v).to_bits()),
            DType::F16 => narrow(f32s.as_f32(), |v| half::f16::from_f32(v).to_bits()),
            _ => return Err(err(format!("no conversion from {from} to {to}"))),
        });
    }
    let row_bytes =
        from.bytes_for(row_len).ok_or_else(|| err(format!("row of {row_len} is not whole {from} blocks")))?;
    if row_bytes == 0 || bytes.len() % row_bytes != 0 {
        return Err(err(format!("{} bytes are not whole rows of {row_bytes}", bytes.len())));
    }
    let rows = bytes.len() / row_bytes;
    let mut out = AlignedBuf::zeroed(rows * row_len * 4);
    let dst = out.as_bytes_mut();
    // SAFETY: the buffer is 64-byte aligned and holds rows × row_len f32s.
    let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, rows * row_len) };
    for (src, d) in bytes.chunks_exact(row_bytes).zip(dst.chunks_exact_mut(row_len)) {
        quant::dequantize_row(from, src, d).map_err(|e| err(e.to_string()))?;
    }
    Ok(out)
}

/// f32s rounded to a 16-bit float format.
fn narrow(values: &[f32], bits: impl Fn(f32) -> u16) -> AlignedBuf {
    let mut out = AlignedBuf::zeroed(values.len() * 2);
    for (d, &v) in out.as_bytes_mut().chunks_exact_mut(2).zip(values) {
        d.copy_from_slice(&bits(v).to_le_bytes());
    }
    out
}
