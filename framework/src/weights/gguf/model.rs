//! GGUF → model: `ModelConfig` from the `llama.*` / `qwen2.*` metadata, GGUF tensor names →
//! HF names with HF-order shapes, and undoing llama.cpp's rotary permutation of the Q/K
//! projections of Llama models (whole rows, so quantized bytes survive unchanged).

use super::{GgufError, GgufFile, GgufTensorInfo};
use crate::weights::store::{Tensor, WeightFile, WeightStore};
use crate::weights::WeightError;
use rtllm_models::{ModelConfig, RopeScaling};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// `general.architecture` values this loader maps.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2";

/// The HF class and model_type for a GGUF architecture.
fn hf_architecture(arch: &str) -> Option<(&'static str, &'static str)> {
    match arch {
        "llama" => Some(("LlamaForCausalLM", "llama")),
        "qwen2" => Some(("Qwen2ForCausalLM", "qwen2")),
        _ => None,
    }
}

/// The HF name of a GGUF tensor (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`),
/// or `None` for names with no HF counterpart.
pub fn hf_tensor_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Reads the model config from the metadata (`{arch}.*` keys, the tokenizer's vocabulary and
/// special ids; `tie_word_embeddings` is the absence of `output.weight`).
pub fn config_from_gguf(file: &GgufFile, path: &Path) -> Result<ModelConfig, WeightError> {
    let gguf_err = |source: GgufError| WeightError::Gguf { path: path.to_path_buf(), source };
    let missing = |key: String| WeightError::MissingMetadata { path: path.to_path_buf(), key };
    let meta = &file.metadata;
    let arch = file.architecture().map_err(gguf_err)?.ok_or_else(|| missing("general.architecture".into()))?;
    let (architecture, model_type) = hf_architecture(arch).ok_or_else(|| WeightError::UnsupportedArchitecture {
        path: path.to_path_buf(),
        arch: arch.to_string(),
        supported: SUPPORTED_ARCHITECTURES,
    })?;
    let key = |k: &str| format!("{arch}.{k}");
    let required = |k: &str| -> Result<usize, WeightError> {
        meta.usize(&key(k)).map_err(gguf_err)?.ok_or_else(|| missing(key(k)))
    };

    let hidden_size = required("embedding_length")?;
    let num_attention_heads = required("attention.head_count")?;
    let num_key_value_heads =
        meta.usize(&key("attention.head_count_kv")).map_err(gguf_err)?.unwrap_or(num_attention_heads);
    let head_dim = match meta.usize(&key("attention.key_length")).map_err(gguf_err)? {
        Some(d) => d,
        None => hidden_size.checked_div(num_attention_heads).unwrap_or(0),
    };
    let rms_norm_eps = meta
        .f64(&key("attention.layer_norm_rms_epsilon"))
        .map_err(gguf_err)?
        .ok_or_else(|| missing(key("attention.layer_norm_rms_epsilon")))?;
    // f32 in the file: round to the shortest decimal so 1e-5 reads back as 1e-5.
    let rms_norm_eps = shortest_f32(rms_norm_eps);
    let rope_theta = meta.f64(&key("rope.freq_base")).map_err(gguf_err)?.map(shortest_f32).unwrap_or(10_000.0);
    let max_position_embeddings = meta.usize(&key("context_length")).map_err(gguf_err)?.unwrap_or(2048);

    let rope_scaling = rope_scaling(file, arch).map_err(gguf_err)?;
    if file.tensor("rope_freqs.weight").is_some() {
        tracing::warn!(
            "{}: `rope_freqs.weight` (Llama 3 rope scaling as per-dimension factors) is kept as a tensor but not \
             turned into rope_scaling parameters",
            path.display()
        );
    }

    let tokens = meta.array("tokenizer.ggml.tokens").map_err(gguf_err)?.map(<[_]>::len);
    let embedding_rows = file.tensor("token_embd.weight").and_then(|t| t.dims.get(1)).map(|&d| d as usize);
    let vocab_size = match (tokens, embedding_rows) {
        (Some(t), Some(e)) if t != e => {
            tracing::warn!("{}: {t} tokens but {e} embedding rows; vocab_size = {e}", path.display());
            e
        }
        (Some(t), _) => t,
        (None, Some(e)) => e,
        (None, None) => required("vocab_size")?,
    };

    let token_id = |k: &str| meta.u32(k).map_err(gguf_err);
    let bos_token_id = token_id("tokenizer.ggml.bos_token_id")?;
    let mut eos_token_ids = Vec::new();
    for k in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(id) = token_id(k)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }

    let mut extra = BTreeMap::new();
    if let Some(name) = meta.str("general.name").map_err(gguf_err)? {
        extra.insert("gguf.general.name".to_string(), serde_json::Value::from(name));
    }
    let config = ModelConfig {
        architecture: architecture.to_string(),
        model_type: model_type.to_string(),
        vocab_size,
        hidden_size,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: required("block_count")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        attention_bias: arch == "qwen2"
            || ["attn_q", "attn_k", "attn_v"].iter().any(|p| file.tensor(&format!("blk.0.{p}.bias")).is_some()),
        mlp_bias: file.tensor("blk.0.ffn_up.bias").is_some(),
        bos_token_id,
        eos_token_ids,
        sliding_window: None,
        extra,
    };
    config.validate().map_err(|source| WeightError::Config { path: path.to_path_buf(), source })?;
    Ok(config)
}

/// The f64 nearest to the shortest decimal that round-trips `v` as an f32.
fn shortest_f32(v: f64) -> f64 {
    let f = v as f32;
    if f as f64 == v {
        format!("{f}").parse().unwrap_or(v)
    } else {
        v
    }
}

fn rope_scaling(file: &GgufFile, arch: &str) -> Result<Option<RopeScaling>, GgufError> {
    let meta = &file.metadata;
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let factor = match meta.f64(&key("factor"))? {
        Some(f) => Some(f),
        None => meta.f64(&format!("{arch}.rope.scale_linear"))?,
    };
    let kind = match meta.str(&key("type"))? {
        Some(t) => t.to_string(),
        None if factor.is_some() => "linear".to_string(),
        None => return Ok(None),
    };
    if kind == "none" {
        return Ok(None);
    }
    let factor = factor.map(shortest_f32).ok_or_else(|| GgufError::Metadata {
        key: key("factor"),
        message: format!("missing for rope scaling type {kind:?}"),
    })?;
    // llama.cpp treats a linear factor of 0 or 1 as no scaling.
    if kind == "linear" && (factor == 0.0 || factor == 1.0) {
        return Ok(None);
    }
    Ok(Some(RopeScaling {
        rope_type: kind,
        factor,
        low_freq_factor: None,
        high_freq_factor: None,
        original_max_position_embeddings: meta.usize(&key("original_context_length"))?,
        extra: BTreeMap::new(),
    }))
}

/// Undoes llama.cpp's `permute` of Q/K projection rows. `convert_hf_to_gguf.py` writes HF
/// row `h*hd + j*(hd/2) + i` (j in 0..2) as GGUF row `h*hd + 2*i + j`; this moves each GGUF
/// row back. Rows are opaque byte strings (whole quantized blocks), so the data is exact.
pub fn unpermute_rows(bytes: &[u8], n_rows: usize, n_head: usize) -> Result<Vec<u8>, String> {
    if n_head == 0 || n_rows % n_head != 0 || (n_rows / n_head) % 2 != 0 {
        return Err(format!("{n_rows} rows do not split into {n_head} heads of an even size"));
    }
    if n_rows == 0 || bytes.len() % n_rows != 0 {
        return Err(format!("{} bytes do not split into {n_rows} rows", bytes.len()));
    }
    let row = bytes.len() / n_rows;
    let hd = n_rows / n_head;
    let half = hd / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * half + i;
                out[dst * row..(dst + 1) * row].copy_from_slice(&bytes[src * row..(src + 1) * row]);
            }
        }
    }
    Ok(out)
}

/// The number of heads whose rotary permutation applies to this GGUF tensor, if any.
fn permuted_heads(arch: &str, gguf_name: &str, config: &ModelConfig) -> Option<usize> {
    if arch != "llama" {
        return None;
    }
    let part = gguf_name.strip_prefix("blk.")?.split('.').nth(1)?;
    match part {
        "attn_q" => Some(config.num_attention_heads),
        "attn_k" => Some(config.num_key_value_heads),
        _ => None,
    }
}

/// Builds the weight store: HF names, HF-order shapes, data in the map except for the
/// un-permuted Q/K projections of Llama models (owned copies).
pub fn weights_from_gguf(
    file: &GgufFile,
    map: &Arc<WeightFile>,
    config: &ModelConfig,
) -> Result<WeightStore, WeightError> {
    let path = &map.path;
    let arch = file.architecture().ok().flatten().unwrap_or_default();
    let mut store = WeightStore::new();
    for info in &file.tensors {
        let dtype = info.dtype().map_err(|source| WeightError::Gguf { path: path.clone(), source })?;
        let name = hf_tensor_name(&info.name).unwrap_or_else(|| {
            tracing::debug!("{}: tensor `{}` has no HF name; kept as is", path.display(), info.name);
            info.name.clone()
        });
        let (offset, len) = (info.offset as usize, info.n_bytes as usize);
        let tensor = match permuted_heads(arch, &info.name, config) {
            Some(n_head) => {
                let rows = output_rows(info).map_err(|m| WeightError::tensor(path, &info.name, m))?;
                let data = unpermute_rows(&map.bytes()[offset..offset + len], rows, n_head).map_err(|m| {
                    WeightError::tensor(path, &info.name, format!("cannot undo the rotary permutation: {m}"))
                })?;
                Tensor::owned(&name, dtype, info.hf_shape(), data)?
            }
            None => Tensor::in_file(map.clone(), &name, dtype, info.hf_shape(), offset, len)?,
        };
        if store.insert(name.clone(), tensor).is_some() {
            return Err(WeightError::Duplicate { path: path.clone(), tensor: name });
        }
    }
    Ok(store)
}

/// Output rows of a projection weight (`[in, out]` in ggml order) or bias (`[out]`).
fn output_rows(info: &GgufTensorInfo) -> Result<usize, String> {
    match info.dims.as_slice() {
        [_, out] => Ok(*out as usize),
        [out] if info.ggml_type.block_size == 1 => Ok(*out as usize),
        dims => Err(format!(
            "expected a 2-D weight or an unquantized 1-D bias, found dims {dims:?} of {}",
            info.ggml_type.name
        )),
    }
}
