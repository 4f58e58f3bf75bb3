//! FP8 E4M3 weights and scales, computed the way compressed-tensors (llm-compressor's
//! library) computes them, so our output equals theirs bit for bit for the same weights and
//! activation maxima: scale = amax / 448 in the model's dtype (0 → that dtype's epsilon),
//! weight = e4m3(clamp(dtype(w / scale), ±448)), every intermediate rounded to the model dtype
//! (bf16, f16 or f32) as torch does on a tensor of that dtype.

use half::{bf16, f16};
use rayon::prelude::*;
use rtllm_plugin_api::fp8::{f32_to_e4m3, E4M3_MAX};
use rtllm_plugin_api::DType;

/// How weight scales are laid out (compressed-tensors `strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightScheme {
    /// One scale per tensor: `weight_scale` of shape [1].
    PerTensor,
    /// One scale per output channel (row): `weight_scale` of shape [out, 1].
    PerChannel,
}

/// How activations entering a quantized linear layer are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ActivationScheme {
    /// One scale per layer from calibration, stored as `input_scale` of shape [1].
    Static,
    /// A scale per token computed at run time; nothing stored.
    Dynamic,
}

/// `x` rounded to `dtype` (f32, bf16 or f16; round to nearest even), as a torch op on a tensor
/// of that dtype stores its result.
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// `torch.finfo(dtype).eps`: what compressed-tensors puts in place of a zero scale.
fn epsilon(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => bf16::EPSILON.to_f32(),
        DType::F16 => f16::EPSILON.to_f32(),
        _ => f32::EPSILON,
    }
}

/// The symmetric FP8 scale for a largest |x| of `amax`, in `dtype`: `amax / 448`, and the
/// dtype's epsilon for an all-zero input (a scale must never be zero).
pub fn scale_for(amax: f32, dtype: DType) -> f32 {
    let scale = round_to(dtype, round_to(dtype, amax) / E4M3_MAX);
    if scale == 0.0 {
        epsilon(dtype)
    } else {
        scale
    }
}

/// One value quantized with `scale`: `e4m3(dtype(x / scale) + 0)` (the `+ 0` is
/// compressed-tensors' symmetric zero point, which turns -0 into +0), saturating at ±448.
pub fn quantize_value(x: f32, scale: f32, dtype: DType) -> u8 {
    f32_to_e4m3(round_to(dtype, x / scale) + 0.0)
}

/// A weight in FP8 with its scales (one, or one per row), as f32 values of `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fp8Weight {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

/// The scales of a `[rows, cols]` weight whose `values` are values of `dtype`: one for the
/// whole tensor, or one per row.
pub fn weight_scales(values: &[f32], rows: usize, scheme: WeightScheme, dtype: DType) -> Vec<f32> {
    let amax = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    match scheme {
        WeightScheme::PerTensor => vec![scale_for(amax(values), dtype)],
        WeightScheme::PerChannel => {
            values.par_chunks(row_len(values, rows)).map(|row| scale_for(amax(row), dtype)).collect()
        }
    }
}

fn row_len(values: &[f32], rows: usize) -> usize {
    values.len().checked_div(rows).unwrap_or(0).max(1)
}

/// Quantizes a `[rows, cols]` weight whose `values` are already values of `dtype`.
pub fn quantize_weight(values: &[f32], rows: usize, scheme: WeightScheme, dtype: DType) -> Fp8Weight {
    let scales = weight_scales(values, rows, scheme, dtype);
    let cols = row_len(values, rows);
    let mut codes = vec![0u8; values.len()];
    codes.par_chunks_mut(cols).zip(values.par_chunks(cols)).enumerate().for_each(|(r, (out, row))| {
        let scale = scales[if scales.len() == 1 { 0 } else { r }];
        out.iter_mut().zip(row).for_each(|(c, &x)| *c = quantize_value(x, scale, dtype));
    });
    Fp8Weight { codes, scales }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::fp8::e4m3_to_f32;

    #[test]
    fn scales_follow_the_dtype() {
        assert_eq!(scale_for(448.0, DType::F32), 1.0);
        assert_eq!(scale_for(0.0, DType::BF16), 0.0078125);
        assert_eq!(scale_for(0.0, DType::F32), f32::EPSILON);
        // 1/448 is not a bf16 value: the scale is its bf16 rounding.
        assert_eq!(scale_for(1.0, DType::BF16), bf16::from_f32(1.0 / 448.0).to_f32());
        assert_ne!(scale_for(1.0, DType::BF16), 1.0 / 448.0);
    }

    #[test]
    fn per_channel_rows_reach_448_and_per_tensor_only_at_the_max() {
        let w = [1.0f32, -0.5, 0.25, 0.0, 2.0, -4.0, 1.0, -0.0];
        let pc = quantize_weight(&w, 2, WeightScheme::PerChannel, DType::F32);
        assert_eq!(pc.scales, vec![1.0 / 448.0, 4.0 / 448.0]);
        assert_eq!(e4m3_to_f32(pc.codes[0]), 448.0);
        assert_eq!(e4m3_to_f32(pc.codes[5]), -448.0);
        assert_eq!(pc.codes[7], 0x00, "-0 becomes +0 through the zero point");
        let pt = quantize_weight(&w, 2, WeightScheme::PerTensor, DType::F32);
        assert_eq!(pt.scales, vec![4.0 / 448.0]);
        assert_eq!(e4m3_to_f32(pt.codes[5]), -448.0);
        assert_eq!(e4m3_to_f32(pt.codes[0]), 112.0);
        // Dequantized values stay within half an E4M3 step of the weights.
        for (c, x) in pt.codes.iter().zip(w) {
            let back = e4m3_to_f32(*c) * pt.scales[0];
            assert!((back - x).abs() <= x.abs() / 16.0 + 1e-6, "{x} -> {back}");
        }
    }
}
