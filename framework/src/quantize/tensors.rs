//! The output tensors: each linear weight becomes `X.weight` (F8_E4M3), `X.weight_scale` and,
//! with static activations, `X.input_scale` (scales in the weight's own dtype, shapes [1] or
//! [out, 1] as compressed-tensors makes them); with an FP8 KV cache each layer gets
//! `model.layers.N.self_attn.k_scale` / `v_scale` [1] (llm-compressor's names); every other
//! tensor is kept (a GGUF source's tensors dequantized to bf16). Tensors are planned first (names, dtypes, shapes, sizes) and
//! made shard by shard.

use super::fp8::{quantize_weight, round_to, scale_for, weight_scales, WeightScheme};
use super::output::PlannedTensor;
use super::QuantizeError;
use crate::engine::ActivationStats;
use crate::weights::{kv_scales, Tensor, WeightStore};
use half::{bf16, f16};
use rtllm_plugin_api::DType;
use std::collections::BTreeMap;

/// What becomes of each source tensor.
pub struct TensorPlan {
    /// Output name → how to make it.
    pub parts: BTreeMap<String, Part>,
    pub weight_scheme: WeightScheme,
}

/// How an output tensor is made from the source.
#[derive(Clone, Debug)]
pub enum Part {
    /// The source tensor `name` in `dtype` (its own, or bf16 for a dequantized GGUF tensor).
    Kept { name: String, dtype: DType },
    /// The FP8 codes of linear weight `name`, quantized as `dtype`.
    Fp8 { name: String, dtype: DType },
    /// The weight scales of linear weight `name`, in `dtype`.
    WeightScale { name: String, dtype: DType },
    /// A static scale value (an input scale, a KV-cache scale), in `dtype`.
    StaticScale { scale: f32, dtype: DType },
}

/// The dtype a source tensor is treated as: its own for f32/bf16/f16, bf16 for GGUF blocks
/// (dequantized), and an error for anything else among the linear weights.
pub fn model_dtype(name: &str, t: &Tensor, from_gguf: bool) -> Result<DType, QuantizeError> {
    match t.dtype {
        DType::F32 | DType::BF16 | DType::F16 if !from_gguf => Ok(t.dtype),
        d if from_gguf && (d.is_float() || d.is_quantized()) => Ok(DType::BF16),
        other => Err(QuantizeError::Unsupported(format!(
            "tensor `{name}` is {other}; the source must hold f32, bf16 or f16 weights (or be a GGUF file)"
        ))),
    }
}

impl TensorPlan {
    /// Plans the output of `weights` with `targets` (weight name, module name) quantized; input
    /// scales from `stats` (static activations), and KV-cache scales of `kv.1` layers from
    /// `kv.0` (an FP8 KV cache).
    pub fn new(
        weights: &WeightStore,
        targets: &[(String, String)],
        scheme: WeightScheme,
        stats: Option<&ActivationStats>,
        kv: Option<(&ActivationStats, usize)>,
        from_gguf: bool,
    ) -> Result<TensorPlan, QuantizeError> {
        let mut parts = BTreeMap::new();
        let target_modules: BTreeMap<&str, &str> = targets.iter().map(|(w, m)| (w.as_str(), m.as_str())).collect();
        for (name, t) in weights.iter() {
            let Some(module) = target_modules.get(name) else {
                let dtype = if from_gguf { model_dtype(name, t, true)? } else { t.dtype };
                parts.insert(name.to_string(), Part::Kept { name: name.to_string(), dtype });
                continue;
            };
            let dtype = model_dtype(name, t, from_gguf)?;
            if t.shape.len() != 2 {
                return Err(QuantizeError::Unsupported(format!(
                    "linear weight `{name}` has shape {:?}, not 2-D",
                    t.shape
                )));
            }
            parts.insert(name.to_string(), Part::Fp8 { name: name.to_string(), dtype });
            parts.insert(format!("{module}.weight_scale"), Part::WeightScale { name: name.to_string(), dtype });
            if let Some(stats) = stats {
                let amax = stats.amax.get(name).copied().ok_or_else(|| {
                    QuantizeError::Calibration(format!(
                        "calibration never reached `{name}`: no input scale for it (is the text long enough?)"
                    ))
                })?;
                parts.insert(
                    format!("{module}.input_scale"),
                    Part::StaticScale { scale: scale_for(amax, dtype), dtype },
                );
            }
        }
        if let Some((stats, layers)) = kv {
            for layer in 0..layers {
                let k_proj = format!("model.layers.{layer}.self_attn.k_proj.weight");
                let dtype = match weights.get(&k_proj) {
                    Some(t) => model_dtype(&k_proj, t, from_gguf)?,
                    None => DType::BF16,
                };
                for which in ['k', 'v'] {
                    let name = kv_scales::name(layer, which);
                    let amax = stats.amax.get(&name).copied().ok_or_else(|| {
                        QuantizeError::Calibration(format!(
                            "calibration never reached layer {layer}'s attention: no {which}_scale for the FP8 KV cache"
                        ))
                    })?;
                    parts.insert(name, Part::StaticScale { scale: scale_for(amax, dtype), dtype });
                }
            }
        }
        Ok(TensorPlan { parts, weight_scheme: scheme })
    }

    /// Every output tensor's name, dtype, shape and size, sorted by name.
    pub fn planned(&self, weights: &WeightStore) -> Result<Vec<PlannedTensor>, QuantizeError> {
        self.parts
            .iter()
            .map(|(out, part)| {
                let (dtype, shape) = match part {
                    Part::Kept { name, dtype } => (*dtype, weights.require(name).map_err(weight_err)?.shape.clone()),
                    Part::Fp8 { name, .. } => {
                        (DType::F8_E4M3, weights.require(name).map_err(weight_err)?.shape.clone())
                    }
                    Part::WeightScale { name, dtype } => {
                        let rows = weights.require(name).map_err(weight_err)?.shape[0];
                        let shape = match self.weight_scheme {
                            WeightScheme::PerTensor => vec![1],
                            WeightScheme::PerChannel => vec![rows, 1],
                        };
                        (*dtype, shape)
                    }
                    Part::StaticScale { dtype, .. } => (*dtype, vec![1]),
                };
                let elements: usize = shape.iter().product();
                let bytes = dtype.bytes_for(elements).unwrap_or(0);
                Ok(PlannedTensor { name: out.clone(), dtype, shape, bytes })
            })
            .collect()
    }

    /// The bytes of output tensor `out`.
    pub fn make(&self, weights: &WeightStore, out: &str) -> Result<Vec<u8>, QuantizeError> {
        let part =
            self.parts.get(out).ok_or_else(|| QuantizeError::Unsupported(format!("no tensor `{out}` planned")))?;
        match part {
            Part::Kept { name, dtype } => {
                let t = weights.require(name).map_err(weight_err)?;
                if t.dtype == *dtype {
                    return Ok(t.bytes().to_vec());
                }
                Ok(encode(&t.to_f32(name).map_err(weight_err)?, *dtype))
            }
            Part::Fp8 { name, dtype } => {
                let (values, rows) = self.values(weights, name, *dtype)?;
                Ok(quantize_weight(&values, rows, self.weight_scheme, *dtype).codes)
            }
            Part::WeightScale { name, dtype } => {
                let (values, rows) = self.values(weights, name, *dtype)?;
                Ok(encode(&weight_scales(&values, rows, self.weight_scheme, *dtype), *dtype))
            }
            Part::StaticScale { scale, dtype } => Ok(encode(&[*scale], *dtype)),
        }
    }

    /// A linear weight's values as values of `dtype` (finite, checked), and its row count.
    fn values(&self, weights: &WeightStore, name: &str, dtype: DType) -> Result<(Vec<f32>, usize), QuantizeError> {
        let t = weights.require(name).map_err(weight_err)?;
        let mut values = t.to_f32(name).map_err(weight_err)?;
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(QuantizeError::Unsupported(format!(
                "weight `{name}` holds a non-finite value ({}) at element {bad}",
                values[bad]
            )));
        }
        values.iter_mut().for_each(|v| *v = round_to(dtype, *v));
        Ok((values, t.shape[0]))
    }
}

fn weight_err(error: crate::weights::WeightError) -> QuantizeError {
    QuantizeError::Unsupported(error.to_string())
}

/// f32 values as little-endian `dtype` (f32, bf16 or f16; round to nearest even).
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}
