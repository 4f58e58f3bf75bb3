//! The Llama family as one definition: Llama 2/3, Mistral, Qwen2 (QKV bias), SmolLM; tied or
//! separate output head; GQA; rope theta and scaling from the config. Uses the fused
//! `fused_add_rmsnorm` op when a plugin registers it, else `add` + `rmsnorm`.

use crate::arch::{Architecture, ArchitectureEntry, BuildOptions};
use crate::builder::{BuildError, GraphBuilder, Value};
use crate::config::ModelConfig;
use crate::io;
use rtllm_plugin_api::{Attrs, TensorMeta};

pub struct Llama;

inventory::submit! { ArchitectureEntry(&Llama) }

/// The residual stream between blocks: the pending block output and the running residual.
struct Stream {
    pending: Value,
    residual: Option<Value>,
}

/// Norm helpers that pick the fused op when available.
struct Norms {
    fused: bool,
    eps: f64,
}

impl Norms {
    fn attrs(&self) -> Attrs {
        Attrs::new().with("eps", self.eps)
    }

    /// Adds the pending output into the residual and normalises: returns (normed, residual).
    fn add_norm(&self, b: &mut dyn GraphBuilder, s: &Stream, weight: Value) -> Result<(Value, Value), BuildError> {
        let Some(residual) = s.residual else {
            let normed = b.op1("rmsnorm", &[s.pending, weight], self.attrs())?;
            return Ok((normed, s.pending));
        };
        if self.fused {
            return b.op2("fused_add_rmsnorm", &[s.pending, residual, weight], self.attrs());
        }
        let sum = b.op1("add", &[s.pending, residual], Attrs::new())?;
        let normed = b.op1("rmsnorm", &[sum, weight], self.attrs())?;
        Ok((normed, sum))
    }
}

fn rope_attrs(c: &ModelConfig) -> Attrs {
    let mut a = Attrs::new().with("head_dim", c.head_dim).with("theta", c.rope_theta).with("style", "neox");
    if let Some(s) = &c.rope_scaling {
        a.set("scaling_type", s.rope_type.as_str());
        a.set("scaling_factor", s.factor);
        if let Some(v) = s.low_freq_factor {
            a.set("low_freq_factor", v);
        }
        if let Some(v) = s.high_freq_factor {
            a.set("high_freq_factor", v);
        }
        if let Some(v) = s.original_max_position_embeddings {
            a.set("original_max_position_embeddings", v);
        }
    }
    a
}

/// A linear layer `x · Wᵀ (+ bias)`; the bias is used when the weight source has it.
fn linear(b: &mut dyn GraphBuilder, x: Value, name: &str, bias: bool) -> Result<Value, BuildError> {
    let w = b.weight(&format!("{name}.weight"))?;
    let bias_name = format!("{name}.bias");
    if bias || b.has_weight(&bias_name) {
        let bv = b.weight(&bias_name)?;
        return b.op1("matmul", &[x, w, bv], Attrs::new());
    }
    b.op1("matmul", &[x, w], Attrs::new())
}

struct StepInputs {
    positions: Value,
    block_tables: Value,
    seq_lens: Value,
    query_start: Value,
}

fn attention(
    b: &mut dyn GraphBuilder,
    c: &ModelConfig,
    opts: &BuildOptions,
    layer: usize,
    h: Value,
    step: &StepInputs,
) -> Result<Value, BuildError> {
    let p = format!("model.layers.{layer}.self_attn");
    let q = linear(b, h, &format!("{p}.q_proj"), c.attention_bias)?;
    let k = linear(b, h, &format!("{p}.k_proj"), c.attention_bias)?;
    let v = linear(b, h, &format!("{p}.v_proj"), c.attention_bias)?;
    let q = b.op1("rope", &[q, step.positions], rope_attrs(c))?;
    let k = b.op1("rope", &[k, step.positions], rope_attrs(c))?;
    let cache_meta = io::kv_cache_meta(opts.kv_cache_dtype, c.num_key_value_heads, c.head_dim);
    let k_cache = b.input(&io::kv_cache_name(layer, "k"), cache_meta.clone())?;
    let v_cache = b.input(&io::kv_cache_name(layer, "v"), cache_meta)?;
    let mut attrs = Attrs::new()
        .with("num_heads", c.num_attention_heads)
        .with("num_kv_heads", c.num_key_value_heads)
        .with("head_dim", c.head_dim)
        .with("scale", 1.0 / (c.head_dim as f64).sqrt());
    if let Some(w) = c.sliding_window {
        attrs.set("sliding_window", w);
    }
    let inputs = [q, k, v, k_cache, v_cache, step.block_tables, step.seq_lens, step.query_start];
    let a = b.op1("paged_attention", &inputs, attrs)?;
    linear(b, a, &format!("{p}.o_proj"), false)
}

fn mlp(b: &mut dyn GraphBuilder, c: &ModelConfig, layer: usize, h: Value) -> Result<Value, BuildError> {
    let p = format!("model.layers.{layer}.mlp");
    let gate = linear(b, h, &format!("{p}.gate_proj"), c.mlp_bias)?;
    let up = linear(b, h, &format!("{p}.up_proj"), c.mlp_bias)?;
    let act = b.op1("silu_mul", &[gate, up], Attrs::new())?;
    linear(b, act, &format!("{p}.down_proj"), c.mlp_bias)
}

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn hf_names(&self) -> &'static [&'static str] {
        &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]
    }

    fn build(&self, c: &ModelConfig, opts: &BuildOptions, b: &mut dyn GraphBuilder) -> Result<(), BuildError> {
        b.set_scope("inputs");
        let mut inputs = std::collections::HashMap::new();
        for (name, meta) in io::step_input_metas() {
            inputs.insert(name, b.input(name, meta)?);
        }
        let get = |name: &str| -> Value { inputs[name] };
        let step = StepInputs {
            positions: get(io::POSITIONS),
            block_tables: get(io::BLOCK_TABLES),
            seq_lens: get(io::SEQ_LENS),
            query_start: get(io::QUERY_START),
        };
        let norms = Norms { fused: b.has_op("fused_add_rmsnorm"), eps: c.rms_norm_eps };

        b.set_scope("embedding");
        let table = b.weight("model.embed_tokens.weight")?;
        let x = b.op1("embedding", &[get(io::INPUT_IDS), table], Attrs::new())?;
        let mut stream = Stream { pending: x, residual: None };

        for layer in 0..c.num_hidden_layers {
            b.set_scope(&format!("layer {layer}"));
            let ln1 = b.weight(&format!("model.layers.{layer}.input_layernorm.weight"))?;
            let (h, residual) = norms.add_norm(b, &stream, ln1)?;
            let attn = attention(b, c, opts, layer, h, &step)?;
            stream = Stream { pending: attn, residual: Some(residual) };
            let ln2 = b.weight(&format!("model.layers.{layer}.post_attention_layernorm.weight"))?;
            let (h, residual) = norms.add_norm(b, &stream, ln2)?;
            let out = mlp(b, c, layer, h)?;
            stream = Stream { pending: out, residual: Some(residual) };
        }

        b.set_scope("output");
        let norm = b.weight("model.norm.weight")?;
        let (h, _) = norms.add_norm(b, &stream, norm)?;
        let picked = b.op1("gather_rows", &[h, get(io::LOGITS_INDICES)], Attrs::new())?;
        let head = if c.tie_word_embeddings || !b.has_weight("lm_head.weight") {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let head = b.weight(head)?;
        let logits = b.op1("matmul", &[picked, head], Attrs::new())?;
        b.output(io::LOGITS, logits)
    }
}

/// The meta a caller should expect for the logits output.
pub fn logits_meta(c: &ModelConfig) -> TensorMeta {
    TensorMeta::new(rtllm_plugin_api::DType::F32, [rtllm_plugin_api::Dim::sym(io::SYM_LOGITS), c.vocab_size.into()])
}
