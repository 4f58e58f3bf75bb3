//! Builds a `Graph` from an architecture: implements the models' `GraphBuilder` over the plugin
//! registry (kernel selection by device, dtypes, priority and pins) and the weight source
//! (metas by name), running each op's shape/dtype inference hook as the graph is assembled.

use super::graph::{Graph, Node, ProviderInfo, ValueInfo, ValueSource};
use crate::registry::{create_with, infer_with, OpRequest, Provider, Registry};
use rtllm_models::{BuildError, GraphBuilder, Value};
use rtllm_plugin_api::{Attrs, DType, DeviceKind, TensorMeta};
use std::collections::BTreeMap;

/// What the builder needs to know about weights: their stored metas, by name.
pub trait WeightMetas {
    fn weight_meta(&self, name: &str) -> Option<TensorMeta>;
    /// Names present that are closest to `name`, for "missing weight" errors.
    fn nearest_weight_names(&self, name: &str) -> Vec<String>;
}

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

/// A `GraphBuilder` that produces a [`Graph`].
pub struct EngineGraphBuilder<'a> {
    registry: &'a Registry,
    weights: &'a dyn WeightMetas,
    config: &'a SelectionConfig,
    graph: Graph,
    scope: String,
    weight_values: BTreeMap<(String, DType), Value>,
}

fn fmt_metas(metas: &[TensorMeta]) -> String {
    metas.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
}

impl<'a> EngineGraphBuilder<'a> {
    pub fn new(registry: &'a Registry, weights: &'a dyn WeightMetas, config: &'a SelectionConfig) -> Self {
        EngineGraphBuilder {
            registry,
            weights,
            config,
            graph: Graph::default(),
            scope: String::new(),
            weight_values: BTreeMap::new(),
        }
    }

    pub fn finish(self) -> Result<Graph, BuildError> {
        if self.graph.outputs.is_empty() {
            return Err(BuildError::Invalid { scope: self.scope, message: "the model declared no outputs".into() });
        }
        Ok(self.graph)
    }

    fn push_value(&mut self, meta: TensorMeta, source: ValueSource) -> Value {
        self.graph.values.push(ValueInfo { meta, source });
        Value(self.graph.values.len() - 1)
    }

    fn weight_value(&mut self, name: &str, dtype: DType, meta: TensorMeta) -> Value {
        if let Some(v) = self.weight_values.get(&(name.to_string(), dtype)) {
            return *v;
        }
        let meta = TensorMeta { dtype, ..meta };
        let v = self.push_value(meta, ValueSource::Weight { name: name.to_string(), dtype });
        self.weight_values.insert((name.to_string(), dtype), v);
        v
    }

    /// A stored weight's meta, or a "missing weight" error naming the nearest present names.
    fn stored_meta(&self, name: &str) -> Result<TensorMeta, BuildError> {
        self.weights.weight_meta(name).ok_or_else(|| {
            let near = self.weights.nearest_weight_names(name);
            let hint = if near.is_empty() { String::new() } else { format!(" (nearest present: {})", near.join(", ")) };
            BuildError::MissingWeight { scope: self.scope.clone(), name: name.to_string(), hint }
        })
    }

    fn op_error(&self, op: &str, metas: &[TensorMeta], message: impl std::fmt::Display) -> BuildError {
        BuildError::Op {
            scope: self.scope.clone(),
            op: op.to_string(),
            inputs: fmt_metas(metas),
            message: message.to_string(),
        }
    }

    /// Resolves a provider and infers outputs for these inputs, or says why not.
    fn select(&self, op: &str, metas: &[TensorMeta], attrs: &Attrs) -> Result<(&'a Provider, Vec<TensorMeta>), String> {
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

    /// Replaces quantized weight inputs by float copies (converted at load).
    fn with_float_weights(&mut self, inputs: &[Value]) -> Option<Vec<Value>> {
        let dtype = self.config.weight_fallback_dtype?;
        let mut changed = false;
        let mut out = Vec::with_capacity(inputs.len());
        for &v in inputs {
            let info = self.graph.values[v.0].clone();
            match info.source {
                ValueSource::Weight { name, dtype: d } if d != dtype && (d.is_quantized() || !d.is_float()) => {
                    changed = true;
                    out.push(self.weight_value(&name, dtype, info.meta));
                }
                _ => out.push(v),
            }
        }
        changed.then_some(out)
    }
}

impl GraphBuilder for EngineGraphBuilder<'_> {
    fn input(&mut self, name: &str, meta: TensorMeta) -> Result<Value, BuildError> {
        if let Some(v) = self.graph.input(name) {
            if self.graph.meta(v) != &meta {
                return Err(BuildError::Invalid {
                    scope: self.scope.clone(),
                    message: format!(
                        "input '{name}' declared twice with different metas ({} vs {meta})",
                        self.graph.meta(v)
                    ),
                });
            }
            return Ok(v);
        }
        let v = self.push_value(meta, ValueSource::Input(name.to_string()));
        self.graph.inputs.push((name.to_string(), v));
        Ok(v)
    }

    fn weight(&mut self, name: &str) -> Result<Value, BuildError> {
        let meta = self.stored_meta(name)?;
        Ok(self.weight_value(name, meta.dtype, meta))
    }

    fn has_weight(&self, name: &str) -> bool {
        self.weights.weight_meta(name).is_some()
    }

    fn weight_shard(&mut self, name: &str, dim: usize, rank: usize, parts: usize) -> Result<Value, BuildError> {
        if parts == 1 && rank == 0 {
            return self.weight(name);
        }
        let meta = self.stored_meta(name)?;
        let spec = super::shard::ShardSpec { dim, rank, parts };
        let invalid = |message: String| BuildError::Invalid {
            scope: self.scope.clone(),
            message: format!("weight '{name}' {meta}: {message}"),
        };
        let shard_meta = spec.meta(&meta).map_err(&invalid)?;
        let mut dtype = meta.dtype;
        if spec.cuts_blocks(&meta) {
            dtype = self.config.weight_fallback_dtype.ok_or_else(|| {
                invalid(format!(
                    "{parts} column parts cut its {} blocks and no weight fallback dtype is set to dequantize it",
                    meta.dtype
                ))
            })?;
            tracing::warn!(
                "weight '{name}' ({}): {parts} column parts would cut quantized blocks; this shard is dequantized \
                 to {dtype}",
                meta.dtype
            );
        }
        Ok(self.weight_value(&spec.name(name), dtype, shard_meta))
    }

    fn op(&mut self, op: &str, inputs: &[Value], attrs: Attrs) -> Result<Vec<Value>, BuildError> {
        if self.config.disabled_ops.iter().any(|d| d == op) {
            return Err(BuildError::UnknownOp {
                scope: self.scope.clone(),
                op: op.into(),
                hint: " (disabled by the build config)".into(),
            });
        }
        let mut inputs = inputs.to_vec();
        if self.config.dequantize_weights {
            if let Some(converted) = self.with_float_weights(&inputs) {
                inputs = converted;
            }
        }
        let mut metas: Vec<TensorMeta> = inputs.iter().map(|v| self.graph.meta(*v).clone()).collect();
        let (provider, out_metas) = match self.select(op, &metas, &attrs) {
            Ok(found) => found,
            Err(first) => {
                let Some(converted) = self.with_float_weights(&inputs) else {
                    return Err(self.op_error(op, &metas, first));
                };
                let converted_metas: Vec<TensorMeta> = converted.iter().map(|v| self.graph.meta(*v).clone()).collect();
                let found = self
                    .select(op, &converted_metas, &attrs)
                    .map_err(|e| self.op_error(op, &converted_metas, format!("{first}; with float weights: {e}")))?;
                inputs = converted;
                metas = converted_metas;
                found
            }
        };
        let kernel = create_with(provider, &metas, &attrs).map_err(|e| self.op_error(op, &metas, e))?;
        let node = self.graph.nodes.len();
        let outputs: Vec<Value> = out_metas
            .into_iter()
            .enumerate()
            .map(|(i, meta)| self.push_value(meta, ValueSource::Node { node, index: i }))
            .collect();
        self.graph.nodes.push(Node {
            op: op.to_string(),
            scope: self.scope.clone(),
            attrs,
            inputs,
            outputs: outputs.clone(),
            provider: ProviderInfo::of(provider),
            kernel,
        });
        Ok(outputs)
    }

    fn has_op(&self, op: &str) -> bool {
        !self.config.disabled_ops.iter().any(|d| d == op) && self.registry.has_op(op, self.config.device)
    }

    fn meta(&self, value: Value) -> TensorMeta {
        self.graph.meta(value).clone()
    }

    fn output(&mut self, name: &str, value: Value) -> Result<(), BuildError> {
        if value.0 >= self.graph.values.len() {
            return Err(BuildError::Invalid {
                scope: self.scope.clone(),
                message: format!("output '{name}' names an unknown value {value}"),
            });
        }
        self.graph.outputs.push((name.to_string(), value));
        Ok(())
    }

    fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }
}
