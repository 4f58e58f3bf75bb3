//! Activation observation for calibration (`rtllm quantize`): in an engine built with
//! `BuildConfig::observe_matmul_inputs`, the launcher runs steps node by node and, before each
//! `matmul` whose weight input is a model weight, records the largest |value| of its activation
//! input (input 0) under that weight's name; before each `paged_attention` it records the
//! rotated k (input 1) and the v (input 2) under the names of the layer's FP8 KV-cache scales
//! (`model.layers.N.self_attn.k_scale` / `v_scale`). The running maximum over every step is what
//! a static FP8 scale is made from (llm-compressor's `static_minmax` observer: scale =
//! amax / 448). The forward pass is the engine's own; this only reads its inputs.

use super::error::EngineError;
use super::fp8_kv::cache_layer;
use super::graph::{Graph, ValueSource};
use crate::device::CudaDevice;
use crate::weights::kv_scales;
use half::{bf16, f16};
use rtllm_plugin_api::{DType, InputView, TensorView};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Per-weight activation statistics collected so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivationStats {
    /// Weight name → the largest |x| seen in the activations multiplied by it; KV-cache scale
    /// name → the largest |k| or |v| written to that layer's cache.
    pub amax: BTreeMap<String, f32>,
    /// Activation rows (tokens) observed per weight.
    pub rows: BTreeMap<String, u64>,
}

/// Which nodes are observed, and what was seen.
pub(super) struct MatmulObserver {
    /// (node index, input index, name) of every observed input, by node.
    nodes: Vec<(usize, usize, String)>,
    stats: ActivationStats,
    /// Host staging for device inputs.
    staging: Vec<u8>,
}

impl MatmulObserver {
    /// Observes input 0 of every `matmul` node of `graph` whose input 1 is a weight, and the
    /// k and v of every `paged_attention` whose cache is the input `kv_cache.N.k`.
    pub fn for_graph(graph: &Graph) -> MatmulObserver {
        let source = |n: &super::graph::Node, k: usize| n.inputs.get(k).map(|v| &graph.values[v.0].source);
        let mut nodes = Vec::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            match (n.op.as_str(), source(n, 1), source(n, 3)) {
                ("matmul", Some(ValueSource::Weight { name, .. }), _) => nodes.push((i, 0, name.clone())),
                ("paged_attention", _, Some(ValueSource::Input(cache))) => {
                    if let Some(layer) = cache_layer(cache) {
                        nodes.push((i, 1, kv_scales::name(layer, 'k')));
                        nodes.push((i, 2, kv_scales::name(layer, 'v')));
                    }
                }
                _ => {}
            }
        }
        MatmulObserver { nodes, stats: ActivationStats::default(), staging: Vec::new() }
    }

    pub fn stats(&self) -> &ActivationStats {
        &self.stats
    }

    /// The observed inputs of node `i`: (input index, the name its maximum is recorded under).
    pub fn observed(&self, i: usize) -> Vec<(usize, String)> {
        let from = self.nodes.partition_point(|(n, _, _)| *n < i);
        self.nodes[from..].iter().take_while(|(n, _, _)| *n == i).map(|(_, k, name)| (*k, name.clone())).collect()
    }

    /// Records an observed input (`input`, on the host or on `device`) under `name`. Non-finite
    /// values are an error naming it: a scale made from them would be meaningless.
    pub fn record(
        &mut self,
        name: &str,
        input: &InputView<'_>,
        device: Option<&Arc<CudaDevice>>,
    ) -> Result<(), EngineError> {
        let name = name.to_string();
        let meta = input.meta();
        let fail = |m: String| EngineError::Setup(format!("observing the input of `{name}`: {m}"));
        let bytes = match device {
            None => input.bytes().map_err(|e| fail(e.to_string()))?,
            Some(d) => {
                let len = meta.byte_size().ok_or_else(|| fail(format!("{meta} has no concrete size")))?;
                let addr = input
                    .device_ptr(rtllm_plugin_api::DeviceKind::Cuda, meta.dtype)
                    .map_err(|e| fail(e.to_string()))?;
                self.staging.resize(len, 0);
                // SAFETY: `addr` is the engine's device buffer for this value, at least `len`
                // bytes (its meta at this step's shape); the step is synchronized before the
                // copy completes is read.
                unsafe { d.copy_to_host_async(&mut self.staging, addr) }.map_err(|e| fail(e.to_string()))?;
                d.synchronize().map_err(|e| fail(e.to_string()))?;
                &self.staging
            }
        };
        let amax = abs_max(meta.dtype, bytes).map_err(fail)?;
        let rows = meta.dims.first().and_then(|d| d.known()).unwrap_or(0) as u64;
        let slot = self.stats.amax.entry(name.clone()).or_insert(0.0);
        *slot = slot.max(amax);
        *self.stats.rows.entry(name).or_insert(0) += rows;
        Ok(())
    }
}

/// The largest |x| of little-endian `bytes` of `dtype` (f32, bf16 or f16); an error on NaN or
/// infinity.
pub fn abs_max(dtype: DType, bytes: &[u8]) -> Result<f32, String> {
    let values: Box<dyn Iterator<Item = f32> + '_> = match dtype {
        DType::F32 => Box::new(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        DType::BF16 => Box::new(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        DType::F16 => Box::new(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        other => return Err(format!("activations of dtype {other} cannot be observed (f32, bf16 or f16)")),
    };
    let mut amax = 0f32;
    for v in values {
        if !v.is_finite() {
            return Err(format!("the activations hold a non-finite value ({v})"));
        }
        amax = amax.max(v.abs());
    }
    Ok(amax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_max_of_each_float_dtype() {
        let v = [0.5f32, -3.25, 2.0];
        let f32_bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let bf_bytes: Vec<u8> = v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect();
        let h_bytes: Vec<u8> = v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
        assert_eq!(abs_max(DType::F32, &f32_bytes), Ok(3.25));
        assert_eq!(abs_max(DType::BF16, &bf_bytes), Ok(3.25));
        assert_eq!(abs_max(DType::F16, &h_bytes), Ok(3.25));
        let nan: Vec<u8> = [1.0f32, f32::NAN].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert!(abs_max(DType::F32, &nan).unwrap_err().contains("non-finite"));
        assert!(abs_max(DType::I32, &f32_bytes).unwrap_err().contains("i32"));
    }
}
