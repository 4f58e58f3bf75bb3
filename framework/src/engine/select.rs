//! Kernel selection: which provider serves an op on the build's device for given input metas
//! (pins, disabled ops, priority), with the outputs that provider infers; and the
//! quantized-weight fallback (weights read in a float dtype when no provider reads them as
//! stored). The graph builder selects every op it is asked for; the fusion pass selects each
//! fused op it considers, the same way.

use super::graph::{Graph, ValueSource, WeightIndex};
use crate::registry::{infer_with, OpRequest, Provider, Registry};
use rtllm_models::Value;
use rtllm_plugin_api::{Attrs, DType, DeviceKind, TensorMeta};
use std::collections::BTreeMap;

/// Kernel-selection settings of a build.
#[derive(Clone, Debug)]
pub struct SelectionConfig {
    pub device: DeviceKind,
    /// op name → plugin name that must serve it.
    pub pins: BTreeMap<String, String>,
    /// Ops treated as unregistered (e.g. to force the unfused path).
    pub disabled_ops: Vec<String>,
    /// The float dtype quantized weights are converted to when no kernel reads them as they are.
    pub weight_fallback_dtype: Option<DType>,
    /// Convert every quantized weight to `weight_fallback_dtype` at load even when a kernel
    /// could read it quantized (the reference path the parity tests use).
    pub dequantize_weights: bool,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig {
            device: DeviceKind::Cpu,
            pins: BTreeMap::new(),
            disabled_ops: Vec::new(),
            weight_fallback_dtype: Some(DType::F32),
            dequantize_weights: false,
        }
    }
}

/// A provider chosen for an op call, the inputs it reads (weights maybe converted) and the
/// metas of its outputs.
pub struct Selected<'a> {
    pub provider: &'a Provider,
    pub inputs: Vec<Value>,
    pub outputs: Vec<TensorMeta>,
}

/// Why no provider takes an op call: the input metas last tried and the reasons.
#[derive(Debug)]
pub struct Rejected {
    pub metas: Vec<TensorMeta>,
    pub message: String,
}

/// Selection over one registry with one build's settings.
#[derive(Clone, Copy)]
pub struct Selector<'a> {
    pub registry: &'a Registry,
    pub config: &'a SelectionConfig,
}

impl<'a> Selector<'a> {
    pub fn new(registry: &'a Registry, config: &'a SelectionConfig) -> Self {
        Selector { registry, config }
    }

    /// Whether the build config disables `op`.
    pub fn is_disabled(&self, op: &str) -> bool {
        self.config.disabled_ops.iter().any(|d| d == op)
    }

    /// Whether some plugin registers `op` for the device (and it is not disabled).
    pub fn has_op(&self, op: &str) -> bool {
        !self.is_disabled(op) && self.registry.has_op(op, self.config.device)
    }

    /// The provider for `op` on these input metas, and the outputs it infers; or why not.
    pub fn select(
        &self,
        op: &str,
        metas: &[TensorMeta],
        attrs: &Attrs,
    ) -> Result<(&'a Provider, Vec<TensorMeta>), String> {
        if self.is_disabled(op) {
            return Err(format!("op '{op}' is disabled by the build config"));
        }
        let request = OpRequest {
            name: op.to_string(),
            device: self.config.device,
            dtypes: metas.iter().map(|m| m.dtype).collect(),
            pin: self.config.pins.get(op).cloned(),
        };
        let registry: &'a Registry = self.registry;
        let provider = registry.resolve(&request).map_err(|e| e.to_string())?;
        let outs = infer_with(provider, metas, attrs).map_err(|e| e.to_string())?;
        Ok((provider, outs))
    }

    /// Selects `op` for `inputs` of `graph`: as they are (every quantized weight converted
    /// first when the config dequantizes), else with quantized weights read in the fallback
    /// float dtype (the converted weight values are added to `graph`).
    pub fn select_in(
        &self,
        graph: &mut Graph,
        weights: &mut WeightIndex,
        op: &str,
        inputs: &[Value],
        attrs: &Attrs,
    ) -> Result<Selected<'a>, Rejected> {
        let mut inputs = inputs.to_vec();
        if self.config.dequantize_weights {
            if let Some(converted) = self.float_weights(graph, weights, &inputs) {
                inputs = converted;
            }
        }
        let metas = |g: &Graph, vs: &[Value]| vs.iter().map(|v| g.meta(*v).clone()).collect::<Vec<_>>();
        let first_metas = metas(graph, &inputs);
        let first = match self.select(op, &first_metas, attrs) {
            Ok((provider, outputs)) => return Ok(Selected { provider, inputs, outputs }),
            Err(e) => e,
        };
        let Some(converted) = self.float_weights(graph, weights, &inputs) else {
            return Err(Rejected { metas: first_metas, message: first });
        };
        let converted_metas = metas(graph, &converted);
        match self.select(op, &converted_metas, attrs) {
            Ok((provider, outputs)) => Ok(Selected { provider, inputs: converted, outputs }),
            Err(e) => Err(Rejected { metas: converted_metas, message: format!("{first}; with float weights: {e}") }),
        }
    }

    /// `inputs` with each quantized (or non-float) weight replaced by its float fallback copy;
    /// None when nothing would change or no fallback dtype is set.
    fn float_weights(&self, graph: &mut Graph, weights: &mut WeightIndex, inputs: &[Value]) -> Option<Vec<Value>> {
        let dtype = self.config.weight_fallback_dtype?;
        let mut changed = false;
        let mut out = Vec::with_capacity(inputs.len());
        for &v in inputs {
            let info = graph.values[v.0].clone();
            match info.source {
                // FP8 weights are read with their scales by the FP8 ops, never converted alone.
                ValueSource::Weight { name, dtype: d }
                    if d != dtype && (d.is_quantized() || !d.is_float()) && !d.is_scaled_storage() =>
                {
                    changed = true;
                    out.push(weights.value(graph, &name, dtype, &info.meta));
                }
                _ => out.push(v),
            }
        }
        changed.then_some(out)
    }
}
