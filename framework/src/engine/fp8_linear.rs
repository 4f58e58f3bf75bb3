//! The plain graph of an FP8 linear layer (docs/quantization.md). A model writes
//! `matmul(x, W[, bias])` for every linear; when `W` is an F8_E4M3 weight, the builder writes
//! the call its format needs instead:
//!
//! ```text
//! fp8_matmul(x, W, W.weight_scale[, W.input_scale][, bias]) {activation, activation_scale_ub?}
//! ```
//!
//! so Rust and TOML architectures get FP8 with no change and give the same graph. A bias stays
//! as stored when it is f32 or of x's dtype, else it is read as f32 (Qwen2's bf16 q/k/v biases
//! in an f32 engine: `fp8_matmul` takes a bias of x's dtype or f32). Under tensor
//! parallelism a per-channel weight scale is split with the weight's rows (column-parallel);
//! a per-tensor scale and the input scale are whole on every rank.

use super::build::EngineGraphBuilder;
use super::graph::ValueSource;
use super::shard::ShardSpec;
use rtllm_models::{BuildError, GraphBuilder, Value};
use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use rtllm_plugin_api::{Attrs, DType};

/// The op call a `matmul` over an FP8 weight becomes.
pub struct Lowered {
    pub op: &'static str,
    pub inputs: Vec<Value>,
    pub attrs: Attrs,
}

/// `Some(call)` when `matmul(inputs)` reads an F8_E4M3 weight, else `None` (a plain matmul).
pub fn lower(b: &mut EngineGraphBuilder<'_>, inputs: &[Value]) -> Result<Option<Lowered>, BuildError> {
    let Some(&w) = inputs.get(1) else { return Ok(None) };
    let name = match b.value_source(w) {
        Some(ValueSource::Weight { name, dtype: DType::F8_E4M3 }) => name.clone(),
        _ => return Ok(None),
    };
    let invalid =
        |b: &EngineGraphBuilder<'_>, message: String| BuildError::Invalid { scope: b.scope().to_string(), message };
    let Some(activation) = b.fp8_activation() else {
        return Err(invalid(b, format!("weight '{name}' is F8_E4M3 but the weights declare no FP8 activation scheme")));
    };
    let (stored, shard) = match ShardSpec::parse(&name) {
        Some((stored, spec)) => (stored.to_string(), Some(spec)),
        None => (name.clone(), None),
    };
    let Some(module) = stored.strip_suffix(".weight") else {
        return Err(invalid(b, format!("FP8 weight '{stored}' is not named `<module>.weight`")));
    };
    let w_scale_name = format!("{module}.weight_scale");
    let per_channel = b.weight_meta_of(&w_scale_name).is_some_and(|m| m.dims[0].known() != Some(1));
    let w_scale = match shard {
        Some(spec) if per_channel && spec.dim == 0 => b.weight_shard(&w_scale_name, 0, spec.rank, spec.parts)?,
        _ => b.weight(&w_scale_name)?,
    };
    let mut call = vec![inputs[0], w, w_scale];
    if activation == Fp8Activation::Static {
        call.push(b.weight(&format!("{module}.input_scale"))?);
    }
    if let Some(&bias) = inputs.get(2) {
        call.push(b.bias_like(bias, inputs[0]));
    }
    Ok(Some(Lowered { op: "fp8_matmul", inputs: call, attrs: activation.attrs() }))
}
