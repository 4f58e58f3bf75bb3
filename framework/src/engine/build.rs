//! The plain graph of an architecture: implements the models' `GraphBuilder` over the plugin
//! registry and the weight source (metas by name). Each op call is selected (`select`: device,
//! dtypes, priority, pins, the quantized-weight fallback) and its outputs inferred by the chosen
//! provider's hook as the graph is assembled; no kernel is created here (see `kernels`). A
//! `matmul` over an FP8 weight is the `fp8_matmul` its scales call for (`fp8_linear`); a
//! `paged_attention` over an FP8 cache gets the layer's kv scales (`fp8_kv`).

use super::graph::{Graph, Node, ProviderInfo, ValueSource, WeightIndex};
use super::select::{SelectionConfig, Selector};
use super::source::WeightMetas;
use crate::registry::Registry;
use rtllm_models::{BuildError, GraphBuilder, Value};
use rtllm_plugin_api::{Attrs, DType, TensorMeta};

/// A `GraphBuilder` that produces a [`Graph`].
pub struct EngineGraphBuilder<'a> {
    selector: Selector<'a>,
    weights: &'a dyn WeightMetas,
    graph: Graph,
    scope: String,
    weight_values: WeightIndex,
}

fn fmt_metas(metas: &[TensorMeta]) -> String {
    metas.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
}

impl<'a> EngineGraphBuilder<'a> {
    pub fn new(registry: &'a Registry, weights: &'a dyn WeightMetas, config: &'a SelectionConfig) -> Self {
        EngineGraphBuilder {
            selector: Selector::new(registry, config),
            weights,
            graph: Graph::default(),
            scope: String::new(),
            weight_values: WeightIndex::default(),
        }
    }

    pub fn finish(self) -> Result<Graph, BuildError> {
        if self.graph.outputs.is_empty() {
            return Err(BuildError::Invalid { scope: self.scope, message: "the model declared no outputs".into() });
        }
        Ok(self.graph)
    }

    /// The graph's record of value `v` (for the FP8 lowering).
    pub(super) fn value_source(&self, v: Value) -> Option<&ValueSource> {
        self.graph.values.get(v.0).map(|info| &info.source)
    }

    pub(super) fn fp8_activation(&self) -> Option<rtllm_plugin_api::shapes::fp8::Fp8Activation> {
        self.weights.fp8_activation()
    }

    pub(super) fn scope(&self) -> &str {
        &self.scope
    }

    /// The stored meta of a weight, if the source has it.
    pub(super) fn weight_meta_of(&self, name: &str) -> Option<TensorMeta> {
        self.weights.weight_meta(name)
    }

    /// A linear's bias as its FP8 lowering may pass it: as stored when it is f32 or of x's dtype,
    /// else (a bf16 bias of an FP8 checkpoint in an f32 engine) an f32 copy made at load.
    pub(super) fn bias_like(&mut self, bias: Value, x: Value) -> Value {
        let x_dtype = self.graph.meta(x).dtype;
        let info = &self.graph.values[bias.0];
        match &info.source {
            ValueSource::Weight { name, dtype } if dtype.is_float() && *dtype != DType::F32 && *dtype != x_dtype => {
                let (name, meta) = (name.clone(), info.meta.clone());
                self.weight_value(&name, DType::F32, meta)
            }
            _ => bias,
        }
    }

    fn weight_value(&mut self, name: &str, dtype: DType, meta: TensorMeta) -> Value {
        self.weight_values.value(&mut self.graph, name, dtype, &meta)
    }

    /// A stored weight's meta, or a "missing weight" error naming the nearest present names.
    fn stored_meta(&self, name: &str) -> Result<TensorMeta, BuildError> {
        self.weights.weight_meta(name).ok_or_else(|| {
            let near = self.weights.nearest_weight_names(name);
            let hint = if near.is_empty() { String::new() } else { format!(" (nearest present: {})", near.join(", ")) };
            BuildError::MissingWeight { scope: self.scope.clone(), name: name.to_string(), hint }
        })
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
        let v = self.graph.push_value(meta, ValueSource::Input(name.to_string()));
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
            dtype = self.selector.config.weight_fallback_dtype.ok_or_else(|| {
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
        if op == "matmul" && attrs.is_empty() {
            if let Some(call) = super::fp8_linear::lower(self, inputs)? {
                return self.op(call.op, &call.inputs, call.attrs);
            }
        }
        if op == "paged_attention" {
            if let Some(call) = super::fp8_kv::lower(self, inputs)? {
                return self.op(op, &call, attrs);
            }
        }
        if self.selector.is_disabled(op) {
            return Err(BuildError::UnknownOp {
                scope: self.scope.clone(),
                op: op.into(),
                hint: " (disabled by the build config)".into(),
            });
        }
        let selected =
            self.selector.select_in(&mut self.graph, &mut self.weight_values, op, inputs, &attrs).map_err(|r| {
                BuildError::Op {
                    scope: self.scope.clone(),
                    op: op.to_string(),
                    inputs: fmt_metas(&r.metas),
                    message: r.message,
                }
            })?;
        let node = self.graph.nodes.len();
        let outputs: Vec<Value> = selected
            .outputs
            .into_iter()
            .enumerate()
            .map(|(i, meta)| self.graph.push_value(meta, ValueSource::Node { node, index: i }))
            .collect();
        self.graph.nodes.push(Node {
            op: op.to_string(),
            scope: self.scope.clone(),
            attrs,
            inputs: selected.inputs,
            outputs: outputs.clone(),
            provider: ProviderInfo::of(selected.provider),
        });
        Ok(outputs)
    }

    fn has_op(&self, op: &str) -> bool {
        self.selector.has_op(op)
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
