//! Fill rules of generated (dummy) weights: every element a pure function of a per-tensor base
//! seed and its index (splitmix64), so the host, a GPU kernel (the `dummy_fill` op of the CUDA
//! plugin, kernels/cuda/fill.cu) and any shard of the tensor produce bit-identical values.

use half::{bf16, f16};
use rayon::prelude::*;
use rtllm_plugin_api::{Attrs, DType};

/// How a generated tensor's elements are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FillRule {
    /// Uniform in [-scale, scale) from the counter-based generator seeded with `base`.
    Uniform { base: u64, scale: f32 },
    /// All ones (norm weights).
    Ones,
}

/// splitmix64: a counter-based generator, so every element is computed independently.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The per-tensor base seed of a model seed and a weight name.
pub fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(splitmix(seed), |h, b| splitmix(h ^ b as u64))
}

impl FillRule {
    /// Element `i` (row-major index in the whole tensor). fill.cu computes the same expression.
    pub fn element(self, i: u64) -> f32 {
        match self {
            FillRule::Ones => 1.0,
            FillRule::Uniform { base, scale } => {
                let r = splitmix(base ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93));
                let unit = (r >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                (unit * 2.0 - 1.0) * scale
            }
        }
    }

    /// The attributes of the `dummy_fill` op that makes this rule's tensor of `dtype` and
    /// `shape` on a device.
    pub fn op_attrs(self, dtype: DType, shape: &[usize]) -> Attrs {
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let attrs = Attrs::new().with("dtype", dtype.to_string()).with("shape", shape);
        match self {
            FillRule::Ones => attrs.with("kind", "ones"),
            // The base travels bit-cast (attrs hold i64).
            FillRule::Uniform { base, scale } => {
                attrs.with("kind", "uniform").with("base", base as i64).with("scale", scale as f64)
            }
        }
    }

    /// The rule back from `dummy_fill` attributes (what the op reference uses).
    pub fn from_op_attrs(attrs: &Attrs) -> Result<FillRule, String> {
        let kind = attrs.str_or("kind", "uniform").map_err(|e| e.to_string())?;
        match kind {
            "ones" => Ok(FillRule::Ones),
            "uniform" => {
                let base = attrs.int("base").map_err(|e| e.to_string())? as u64;
                let scale = attrs.float("scale").map_err(|e| e.to_string())? as f32;
                Ok(FillRule::Uniform { base, scale })
            }
            other => Err(format!("dummy_fill kind must be 'uniform' or 'ones', not '{other}'")),
        }
    }

    /// `n` elements of `dtype` (f32, bf16 or f16, or f8_e4m3: each value's E4M3 code, saturating),
    /// little-endian, filled in parallel.
    pub fn generate(self, dtype: DType, n: usize) -> Result<Vec<u8>, String> {
        const CHUNK: usize = 1 << 16;
        let width = match dtype {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::F8_E4M3 => 1,
            other => return Err(format!("generated weights are f32, bf16, f16 or f8_e4m3, not {other}")),
        };
        let mut out = vec![0u8; n * width];
        out.par_chunks_mut(CHUNK * width).enumerate().for_each(|(c, dst)| {
            for (j, d) in dst.chunks_exact_mut(width).enumerate() {
                let v = self.element((c * CHUNK + j) as u64);
                match dtype {
                    DType::F32 => d.copy_from_slice(&v.to_le_bytes()),
                    DType::BF16 => d.copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
                    DType::F8_E4M3 => d[0] = rtllm_plugin_api::fp8::f32_to_e4m3(v),
                    _ => d.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
                }
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip_and_values_are_in_range() {
        let rule = FillRule::Uniform { base: name_seed(7, "w") | (1 << 63), scale: 0.25 };
        let attrs = rule.op_attrs(DType::BF16, &[3, 5]);
        assert_eq!(FillRule::from_op_attrs(&attrs).unwrap(), rule);
        assert_eq!(FillRule::from_op_attrs(&FillRule::Ones.op_attrs(DType::F32, &[4])).unwrap(), FillRule::Ones);
        let bytes = rule.generate(DType::F32, 1000).unwrap();
        let vals: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert!(vals.iter().all(|v| (-0.25..0.25).contains(v)));
        assert!(vals.iter().any(|v| *v < -0.2) && vals.iter().any(|v| *v > 0.2));
        assert_eq!(vals[17], rule.element(17));
        assert!(rule.generate(DType::Q8_0, 32).is_err());
        let wide = FillRule::Uniform { base: 3, scale: 500.0 };
        let codes = wide.generate(DType::F8_E4M3, 1000).unwrap();
        assert_eq!(codes.len(), 1000);
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(c, rtllm_plugin_api::fp8::f32_to_e4m3(wide.element(i as u64)));
        }
        assert!(codes.iter().any(|&c| c == 0x7e) && codes.iter().any(|&c| c == 0xfe), "saturates at ±448");
    }
}
