//! The model-authoring API: a `GraphBuilder` that an architecture calls to declare inputs,
//! fetch weights by name and call ops by name. The framework implements it (shape/dtype
//! inference through each op's hook, kernel selection); models never see kernels.

use rtllm_plugin_api::{Attrs, TensorMeta};
use std::fmt;

/// A tensor in the graph being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub usize);

/// Why building a model graph failed. Messages name the scope (layer), op and shapes.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{scope}: op '{op}' is not registered{hint}")]
    UnknownOp { scope: String, op: String, hint: String },
    #[error("{scope}: op '{op}' on inputs ({inputs}): {message}")]
    Op { scope: String, op: String, inputs: String, message: String },
    #[error("{scope}: missing weight '{name}'{hint}")]
    MissingWeight { scope: String, name: String, hint: String },
    #[error("{scope}: {message}")]
    Invalid { scope: String, message: String },
}

/// What an architecture uses to assemble its graph.
pub trait GraphBuilder {
    /// Declares a named graph input (the runtime binds it on every forward pass).
    fn input(&mut self, name: &str, meta: TensorMeta) -> Result<Value, BuildError>;
    /// A weight by name (HF naming); its dtype and shape come from the weight source.
    fn weight(&mut self, name: &str) -> Result<Value, BuildError>;
    /// Whether the weight source has this tensor.
    fn has_weight(&self, name: &str) -> bool;
    /// Part `rank` of `parts` equal slices of a weight along dimension `dim` (tensor
    /// parallelism: dim 0 splits a `[out, in]` matrix's rows, dim 1 its columns). One part is
    /// the whole weight. Builders that cannot slice weights refuse more than one part.
    fn weight_shard(&mut self, name: &str, dim: usize, rank: usize, parts: usize) -> Result<Value, BuildError> {
        if parts == 1 && rank == 0 {
            return self.weight(name);
        }
        Err(BuildError::Invalid {
            scope: String::new(),
            message: format!("this graph builder cannot shard weight '{name}' (dim {dim}, {parts} parts)"),
        })
    }
    /// Calls a registered op; its outputs' metas come from the op's inference hook.
    fn op(&mut self, op: &str, inputs: &[Value], attrs: Attrs) -> Result<Vec<Value>, BuildError>;
    /// Whether some loaded plugin registers this op for the target device (and it is enabled).
    fn has_op(&self, op: &str) -> bool;
    /// The metadata of a value.
    fn meta(&self, value: Value) -> TensorMeta;
    /// Marks a value as a named graph output.
    fn output(&mut self, name: &str, value: Value) -> Result<(), BuildError>;
    /// Names the current scope (e.g. "layer 3") for error messages.
    fn set_scope(&mut self, scope: &str);

    /// Calls an op with exactly one output.
    fn op1(&mut self, op: &str, inputs: &[Value], attrs: Attrs) -> Result<Value, BuildError> {
        let outs = self.op(op, inputs, attrs)?;
        match outs.as_slice() {
            [one] => Ok(*one),
            _ => Err(BuildError::Invalid {
                scope: String::new(),
                message: format!("op '{op}' returned {} outputs where one was expected", outs.len()),
            }),
        }
    }

    /// Calls an op with exactly two outputs.
    fn op2(&mut self, op: &str, inputs: &[Value], attrs: Attrs) -> Result<(Value, Value), BuildError> {
        let outs = self.op(op, inputs, attrs)?;
        match outs.as_slice() {
            [a, b] => Ok((*a, *b)),
            _ => Err(BuildError::Invalid {
                scope: String::new(),
                message: format!("op '{op}' returned {} outputs where two were expected", outs.len()),
            }),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}
