//! The Llama family as one definition: Llama 2/3, Mistral, Qwen2 (QKV bias), SmolLM; tied or
//! separate output head; GQA; rope theta and scaling from the config. It writes the plain graph
//! (matmul, rope, paged_attention, silu_mul, add, rmsnorm); the engine's fusion pass turns it
//! into fused ops where a plugin offers them for the device.

use crate::arch::{Architecture, ArchitectureEntry, BuildOptions};
use crate::builder::{BuildError, GraphBuilder, Value};
use crate::config::ModelConfig;
use crate::io;
use crate::parallel::{AttentionSplit, TensorParallel};
use rtllm_plugin_api::{Attrs, TensorMeta};

pub struct Llama;

inventory::submit! { ArchitectureEntry(&Llama) }

/// The residual stream between blocks: the pending block output and the running residual.
struct Stream {
    pending: Value,
    residual: Option<Value>,
}

/// Adds the pending output into the residual and normalises: returns (normed, residual).
fn add_norm(b: &mut dyn GraphBuilder, s: &Stream, weight: Value, eps: f64) -> Result<(Value, Value), BuildError> {
    let attrs = Attrs::new().with("eps", eps);
    let Some(residual) = s.residual else {
        let normed = b.op1("rmsnorm", &[s.pending, weight], attrs)?;
        return Ok((normed, s.pending));
    };
    let sum = b.op1("add", &[s.pending, residual], Attrs::new())?;
    let normed = b.op1("rmsnorm", &[sum, weight], attrs)?;
    Ok((normed, sum))
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

/// This rank's share of the attention heads (all of them with one rank).
fn head_split(c: &ModelConfig, opts: &BuildOptions) -> Result<AttentionSplit, BuildError> {
    opts.parallel
        .attention_split(c)
        .map_err(|e| BuildError::Invalid { scope: "tensor parallelism".into(), message: e.to_string() })
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
    // Column-parallel Q/K/V: each rank holds its heads' rows (K/V rows replicated when there
    // are fewer KV heads than ranks); row-parallel O, summed across ranks.
    let tp = TensorParallel { parallel: &opts.parallel };
    let split = head_split(c, opts)?;
    let proj = |n: &str| format!("{p}.{n}_proj");
    let q = tp.column(b, h, &proj("q"), c.attention_bias)?;
    let k = tp.column_part(b, h, &proj("k"), c.attention_bias, split.kv_part, split.kv_parts)?;
    let v = tp.column_part(b, h, &proj("v"), c.attention_bias, split.kv_part, split.kv_parts)?;
    let q = b.op1("rope", &[q, step.positions], rope_attrs(c))?;
    let k = b.op1("rope", &[k, step.positions], rope_attrs(c))?;
    attend(b, c, opts, layer, &split, [q, k, v], step)
}

/// Paged attention over rotated q, k and v, then the row-parallel output projection.
fn attend(
    b: &mut dyn GraphBuilder,
    c: &ModelConfig,
    opts: &BuildOptions,
    layer: usize,
    split: &AttentionSplit,
    [q, k, v]: [Value; 3],
    step: &StepInputs,
) -> Result<Value, BuildError> {
    let p = format!("model.layers.{layer}.self_attn");
    let tp = TensorParallel { parallel: &opts.parallel };
    let cache_meta = io::kv_cache_meta(opts.kv_cache_dtype, split.kv_heads, c.head_dim);
    let k_cache = b.input(&io::kv_cache_name(layer, "k"), cache_meta.clone())?;
    let v_cache = b.input(&io::kv_cache_name(layer, "v"), cache_meta)?;
    let mut attrs = Attrs::new()
        .with("num_heads", split.heads)
        .with("num_kv_heads", split.kv_heads)
        .with("head_dim", c.head_dim)
        .with("scale", 1.0 / (c.head_dim as f64).sqrt());
    if let Some(w) = c.sliding_window {
        attrs.set("sliding_window", w);
    }
    let inputs = [q, k, v, k_cache, v_cache, step.block_tables, step.seq_lens, step.query_start];
    let a = b.op1("paged_attention", &inputs, attrs)?;
    tp.row(b, a, &format!("{p}.o_proj"), false)
}

/// Column-parallel gate/up (each rank holds a slice of the intermediate features), then the
/// row-parallel down projection summed across ranks.
fn mlp(
    b: &mut dyn GraphBuilder,
    c: &ModelConfig,
    opts: &BuildOptions,
    layer: usize,
    h: Value,
) -> Result<Value, BuildError> {
    let p = format!("model.layers.{layer}.mlp");
    let tp = TensorParallel { parallel: &opts.parallel };
    let gate = tp.column(b, h, &format!("{p}.gate_proj"), c.mlp_bias)?;
    let up = tp.column(b, h, &format!("{p}.up_proj"), c.mlp_bias)?;
    let act = b.op1("silu_mul", &[gate, up], Attrs::new())?;
    tp.row(b, act, &format!("{p}.down_proj"), c.mlp_bias)
}

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn hf_names(&self) -> &'static [&'static str] {
        &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]
    }

    fn supports_tensor_parallel(&self) -> bool {
        true
    }

    fn build(&self, c: &ModelConfig, opts: &BuildOptions, b: &mut dyn GraphBuilder) -> Result<(), BuildError> {
        if intermediate_unsplittable(c, opts) {
            return Err(BuildError::Invalid {
                scope: "tensor parallelism".into(),
                message: format!(
                    "tensor_parallel_size {} must divide intermediate_size ({})",
                    opts.parallel.tp_size, c.intermediate_size
                ),
            });
        }
        head_split(c, opts)?;
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
        let eps = c.rms_norm_eps;

        // The embedding table is replicated on every rank (the lookup needs no collective).
        b.set_scope("embedding");
        let table = b.weight("model.embed_tokens.weight")?;
        let x = b.op1("embedding", &[get(io::INPUT_IDS), table], Attrs::new())?;
        let mut stream = Stream { pending: x, residual: None };

        for layer in 0..c.num_hidden_layers {
            b.set_scope(&format!("layer {layer}"));
            let ln1 = b.weight(&format!("model.layers.{layer}.input_layernorm.weight"))?;
            let (h, residual) = add_norm(b, &stream, ln1, eps)?;
            let attn = attention(b, c, opts, layer, h, &step)?;
            stream = Stream { pending: attn, residual: Some(residual) };
            let ln2 = b.weight(&format!("model.layers.{layer}.post_attention_layernorm.weight"))?;
            let (h, residual) = add_norm(b, &stream, ln2, eps)?;
            let out = mlp(b, c, opts, layer, h)?;
            stream = Stream { pending: out, residual: Some(residual) };
        }

        b.set_scope("output");
        let norm = b.weight("model.norm.weight")?;
        let (h, _) = add_norm(b, &stream, norm, eps)?;
        let picked = b.op1("gather_rows", &[h, get(io::LOGITS_INDICES)], Attrs::new())?;
        let head = if c.tie_word_embeddings || !b.has_weight("lm_head.weight") {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        // Vocab-parallel head: each rank's slice of the logits, gathered along the vocabulary.
        let tp = TensorParallel { parallel: &opts.parallel };
        let logits = tp.vocab_head(b, picked, head, c.vocab_size)?;
        b.output(io::LOGITS, logits)
    }
}

/// Whether the MLP's intermediate features cannot split evenly across the ranks.
fn intermediate_unsplittable(c: &ModelConfig, opts: &BuildOptions) -> bool {
    c.intermediate_size % opts.parallel.tp_size.max(1) != 0
}

/// The meta a caller should expect for the logits output.
pub fn logits_meta(c: &ModelConfig) -> TensorMeta {
    TensorMeta::new(rtllm_plugin_api::DType::F32, [rtllm_plugin_api::Dim::sym(io::SYM_LOGITS), c.vocab_size.into()])
}
