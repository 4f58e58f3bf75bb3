//! An architecture defined outside rtllm's own crates: `TinyGpt2ForCausalLM`, a GPT-2-style
//! decoder (learned position embeddings, pre-LayerNorm with bias, attention without rotary
//! embeddings, a GELU MLP, tied output head), registered with `inventory` so that linking this
//! crate is all it takes for `build_engine` to find it by the config's `architectures` name.
//!
//! It uses two ops that the Llama family does not: `layer_norm` (built-in, rmsnorm plugin)
//! and `gelu_tanh`, which no built-in plugin provides: it comes from the out-of-tree plugin in
//! examples/custom-kernel-plugin, loaded at run time (RTLLM_PLUGIN_PATH).
//!
//! Weights use HF GPT-2's module names with `nn.Linear` layout (`[out, in]`) and separate
//! q/k/v projections; see [`names`]. [`reference`] is a plain f64 forward pass for tests.

pub mod names;
pub mod reference;

use rtllm_models::io;
use rtllm_models::{Architecture, ArchitectureEntry, BuildError, BuildOptions, GraphBuilder, ModelConfig, Value};
use rtllm_plugin_api::Attrs;
use std::collections::HashMap;

/// The HF `architectures` name this crate registers.
pub const HF_NAME: &str = "TinyGpt2ForCausalLM";

/// The config key of the LayerNorm epsilon (GPT-2's), read from the config's extra keys.
pub const EPS_KEY: &str = "layer_norm_epsilon";

/// Default LayerNorm epsilon (GPT-2's).
pub const DEFAULT_EPS: f64 = 1e-5;

/// The architecture.
pub struct TinyGpt2;

// docs:start:register
inventory::submit! { ArchitectureEntry(&TinyGpt2) }
// docs:end:register

/// The LayerNorm epsilon of a config: `layer_norm_epsilon`, else [`DEFAULT_EPS`].
pub fn layer_norm_eps(c: &ModelConfig) -> Result<f64, BuildError> {
    match c.extra.get(EPS_KEY) {
        None => Ok(DEFAULT_EPS),
        Some(v) => v.as_f64().ok_or_else(|| BuildError::Invalid {
            scope: "config".into(),
            message: format!("`{EPS_KEY}` must be a number, got {v}"),
        }),
    }
}

// docs:start:helpers
/// `x · Wᵀ + b` with the weight and bias of module `module`.
fn linear(b: &mut dyn GraphBuilder, x: Value, module: &str) -> Result<Value, BuildError> {
    let w = b.weight(&format!("{module}.weight"))?;
    let bias = b.weight(&format!("{module}.bias"))?;
    b.op1("matmul", &[x, w, bias], Attrs::new())
}

/// LayerNorm with the weight and bias of module `module`.
fn layer_norm(b: &mut dyn GraphBuilder, x: Value, module: &str, eps: f64) -> Result<Value, BuildError> {
    let w = b.weight(&format!("{module}.weight"))?;
    let bias = b.weight(&format!("{module}.bias"))?;
    b.op1("layer_norm", &[x, w, bias], Attrs::new().with("eps", eps))
}
// docs:end:helpers

/// The step inputs every layer reads.
struct Step {
    block_tables: Value,
    seq_lens: Value,
    query_start: Value,
}

// docs:start:block
/// One pre-LN block: `h + attn(ln_1(h))`, then `h + mlp(ln_2(h))`.
fn block(
    b: &mut dyn GraphBuilder,
    c: &ModelConfig,
    opts: &BuildOptions,
    layer: usize,
    h: Value,
    step: &Step,
) -> Result<Value, BuildError> {
    let eps = layer_norm_eps(c)?;
    let x = layer_norm(b, h, &names::layer(layer, "ln_1"), eps)?;
    let q = linear(b, x, &names::layer(layer, "attn.q_proj"))?;
    let k = linear(b, x, &names::layer(layer, "attn.k_proj"))?;
    let v = linear(b, x, &names::layer(layer, "attn.v_proj"))?;
    // The paged KV cache of this layer: graph inputs the runtime binds.
    let cache = io::kv_cache_meta(opts.kv_cache_dtype, c.num_key_value_heads, c.head_dim);
    let k_cache = b.input(&io::kv_cache_name(layer, "k"), cache.clone())?;
    let v_cache = b.input(&io::kv_cache_name(layer, "v"), cache)?;
    let attrs = Attrs::new()
        .with("num_heads", c.num_attention_heads)
        .with("num_kv_heads", c.num_key_value_heads)
        .with("head_dim", c.head_dim)
        .with("scale", 1.0 / (c.head_dim as f64).sqrt());
    let inputs = [q, k, v, k_cache, v_cache, step.block_tables, step.seq_lens, step.query_start];
    let attn = b.op1("paged_attention", &inputs, attrs)?;
    let attn = linear(b, attn, &names::layer(layer, "attn.out_proj"))?;
    let h = b.op1("add", &[h, attn], Attrs::new())?;

    let x = layer_norm(b, h, &names::layer(layer, "ln_2"), eps)?;
    let up = linear(b, x, &names::layer(layer, "mlp.fc_in"))?;
    let act = b.op1("gelu_tanh", &[up], Attrs::new())?;
    let down = linear(b, act, &names::layer(layer, "mlp.fc_out"))?;
    b.op1("add", &[h, down], Attrs::new())
}
// docs:end:block

impl Architecture for TinyGpt2 {
    fn name(&self) -> &'static str {
        "tiny-gpt2"
    }

    fn hf_names(&self) -> &'static [&'static str] {
        &[HF_NAME]
    }

    // docs:start:build
    fn build(&self, c: &ModelConfig, opts: &BuildOptions, b: &mut dyn GraphBuilder) -> Result<(), BuildError> {
        b.set_scope("inputs");
        // Every per-step input the runtime binds must be declared, used or not.
        let mut inputs = HashMap::new();
        for (name, meta) in io::step_input_metas() {
            inputs.insert(name, b.input(name, meta)?);
        }
        let step = Step {
            block_tables: inputs[io::BLOCK_TABLES],
            seq_lens: inputs[io::SEQ_LENS],
            query_start: inputs[io::QUERY_START],
        };
        if c.num_key_value_heads != c.num_attention_heads {
            return Err(BuildError::Invalid {
                scope: "config".into(),
                message: format!(
                    "tiny-gpt2 uses multi-head attention: num_key_value_heads ({}) must equal num_attention_heads ({})",
                    c.num_key_value_heads, c.num_attention_heads
                ),
            });
        }
        if !b.has_op("gelu_tanh") {
            return Err(BuildError::UnknownOp {
                scope: "tiny-gpt2".into(),
                op: "gelu_tanh".into(),
                hint: " (it comes from examples/custom-kernel-plugin: build it and put the .so on RTLLM_PLUGIN_PATH)"
                    .into(),
            });
        }

        b.set_scope("embedding");
        let wte = b.weight(names::WTE)?;
        let wpe = b.weight(names::WPE)?;
        let tokens = b.op1("embedding", &[inputs[io::INPUT_IDS], wte], Attrs::new())?;
        // Learned positions: the same `embedding` op, indexed by the step's positions.
        let positions = b.op1("embedding", &[inputs[io::POSITIONS], wpe], Attrs::new())?;
        let mut h = b.op1("add", &[tokens, positions], Attrs::new())?;

        for layer in 0..c.num_hidden_layers {
            b.set_scope(&format!("layer {layer}"));
            h = block(b, c, opts, layer, h, &step)?;
        }

        b.set_scope("output");
        let h = layer_norm(b, h, names::LN_F, layer_norm_eps(c)?)?;
        let picked = b.op1("gather_rows", &[h, inputs[io::LOGITS_INDICES]], Attrs::new())?;
        // Tied output head: logits = h · wteᵀ.
        let logits = b.op1("matmul", &[picked, wte], Attrs::new())?;
        b.output(io::LOGITS, logits)
    }
    // docs:end:build
}
