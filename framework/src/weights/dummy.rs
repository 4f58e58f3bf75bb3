//! Dummy weights: a model built from an HF `config.json` (a path, a directory holding one, or
//! a built-in name from `dummy_configs/`) with random weights generated at load (f32 or bf16,
//! deterministic from a seed, filled in parallel) and a byte-fallback dummy tokenizer. For
//! speed work on real shapes without downloads; the output is noise.
//!
//! Weight names and shapes are those of the Llama family (Llama, Mistral, Qwen2, SmolLM):
//! embeddings, per-layer attention (Q/K/V/O, biases when the config asks) and gated MLP,
//! the two RMSNorms, the final norm and an untied `lm_head` when the config has one.

use super::store::{Tensor, WeightStore};
use super::{LoadedModel, WeightError};
use crate::tokenizer::spec::{TokenType, TokenizerModel, TokenizerSpec};
use half::bf16;
use rayon::prelude::*;
use rtllm_models::ModelConfig;
use rtllm_plugin_api::DType;
use std::path::{Path, PathBuf};

/// Built-in configs: (name, HF config.json text).
pub const BUILTIN_CONFIGS: &[(&str, &str)] = &[
    ("smollm2-135m", include_str!("dummy_configs/smollm2-135m.json")),
    ("llama-3.2-1b", include_str!("dummy_configs/llama-3.2-1b.json")),
    ("qwen2.5-0.5b", include_str!("dummy_configs/qwen2.5-0.5b.json")),
    ("tiny-llama", include_str!("dummy_configs/tiny-llama.json")),
];

/// What dummy model to make.
#[derive(Clone, Debug, PartialEq)]
pub struct DummySpec {
    /// A built-in config name (see [`BUILTIN_CONFIGS`]), a config.json path, or a directory
    /// holding one.
    pub config: String,
    /// F32 or BF16.
    pub dtype: DType,
    pub seed: u64,
}

impl DummySpec {
    pub fn new(config: impl Into<String>) -> DummySpec {
        DummySpec { config: config.into(), dtype: DType::F32, seed: 0 }
    }

    /// How the model is named (its `Model::path`).
    pub fn label(&self) -> PathBuf {
        PathBuf::from(format!("dummy:{}:{}:seed{}", self.config, self.dtype, self.seed))
    }
}

fn not_a_model(path: &Path, message: impl Into<String>) -> WeightError {
    WeightError::NotAModel { path: path.into(), message: message.into() }
}

/// The config text and where it came from.
fn config_text(name: &str) -> Result<(String, PathBuf), WeightError> {
    if let Some((_, text)) = BUILTIN_CONFIGS.iter().find(|(n, _)| *n == name) {
        return Ok((text.to_string(), PathBuf::from(format!("<built-in {name}>"))));
    }
    let path = Path::new(name);
    let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    if !file.is_file() {
        let known: Vec<&str> = BUILTIN_CONFIGS.iter().map(|(n, _)| *n).collect();
        return Err(not_a_model(
            path,
            format!("no config.json here and not a built-in dummy config (built-in: {})", known.join(", ")),
        ));
    }
    let text = std::fs::read_to_string(&file).map_err(|e| WeightError::io(&file, e))?;
    Ok((text, file))
}

/// Reads the config of a spec.
pub fn dummy_config(spec: &DummySpec) -> Result<ModelConfig, WeightError> {
    let (text, path) = config_text(&spec.config)?;
    ModelConfig::from_hf_json(&text).map_err(|source| WeightError::Config { path, source })
}

/// splitmix64: a counter-based generator, so every element is computed independently.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(splitmix(seed), |h, b| splitmix(h ^ b as u64))
}

/// How a tensor is filled.
#[derive(Clone, Copy)]
enum Fill {
    /// Uniform in [-scale, scale].
    Uniform(f32),
    Ones,
}

fn element(base: u64, i: usize, fill: Fill) -> f32 {
    match fill {
        Fill::Ones => 1.0,
        Fill::Uniform(scale) => {
            let r = splitmix(base ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
            let unit = (r >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (unit * 2.0 - 1.0) * scale
        }
    }
}

fn make_tensor(name: &str, shape: Vec<usize>, fill: Fill, spec: &DummySpec) -> Result<Tensor, WeightError> {
    let n: usize = shape.iter().product();
    let base = name_seed(spec.seed, name);
    const CHUNK: usize = 1 << 16;
    let bytes = match spec.dtype {
        DType::F32 => {
            let mut out = vec![0u8; n * 4];
            out.par_chunks_mut(CHUNK * 4).enumerate().for_each(|(c, dst)| {
                for (j, d) in dst.chunks_exact_mut(4).enumerate() {
                    d.copy_from_slice(&element(base, c * CHUNK + j, fill).to_le_bytes());
                }
            });
            out
        }
        DType::BF16 => {
            let mut out = vec![0u8; n * 2];
            out.par_chunks_mut(CHUNK * 2).enumerate().for_each(|(c, dst)| {
                for (j, d) in dst.chunks_exact_mut(2).enumerate() {
                    d.copy_from_slice(&bf16::from_f32(element(base, c * CHUNK + j, fill)).to_bits().to_le_bytes());
                }
            });
            out
        }
        other => {
            return Err(not_a_model(Path::new(&spec.config), format!("dummy weights are f32 or bf16, not {other}")))
        }
    };
    Tensor::owned(name, spec.dtype, shape, bytes)
}

/// The Llama-family weight list for a config: (name, shape, fill).
fn weight_list(c: &ModelConfig) -> Vec<(String, Vec<usize>, Fill)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
    let lin = |fan_in: usize| Fill::Uniform(1.0 / (fan_in.max(1) as f32).sqrt());
    let mut w = vec![("model.embed_tokens.weight".to_string(), vec![v, h], Fill::Uniform(1.0))];
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        w.push((p("input_layernorm.weight"), vec![h], Fill::Ones));
        w.push((p("post_attention_layernorm.weight"), vec![h], Fill::Ones));
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            w.push((p(&format!("self_attn.{proj}.weight")), vec![rows, h], lin(h)));
            if c.attention_bias {
                w.push((p(&format!("self_attn.{proj}.bias")), vec![rows], lin(h)));
            }
        }
        w.push((p("self_attn.o_proj.weight"), vec![h, q], lin(q)));
        for (proj, shape, fan_in) in
            [("gate_proj", vec![i, h], h), ("up_proj", vec![i, h], h), ("down_proj", vec![h, i], i)]
        {
            let rows = shape[0];
            w.push((p(&format!("mlp.{proj}.weight")), shape, lin(fan_in)));
            if c.mlp_bias {
                w.push((p(&format!("mlp.{proj}.bias")), vec![rows], lin(fan_in)));
            }
        }
    }
    w.push(("model.norm.weight".to_string(), vec![h], Fill::Ones));
    if !c.tie_word_embeddings {
        w.push(("lm_head.weight".to_string(), vec![v, h], lin(h)));
    }
    w
}

/// A byte-fallback tokenizer over the config's vocabulary: ids 0..=2 are `<unk>`, `<s>`,
/// `</s>`, the next 256 are the bytes, the rest `<dummy_N>` placeholders.
pub fn dummy_tokenizer(vocab_size: usize) -> TokenizerSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut token_types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        token_types.push(TokenType::Byte);
    }
    while tokens.len() < vocab_size {
        tokens.push(format!("<dummy_{}>", tokens.len()));
        token_types.push(TokenType::Normal);
    }
    tokens.truncate(vocab_size.max(3));
    token_types.truncate(tokens.len());
    let scores = vec![0.0; tokens.len()];
    TokenizerSpec {
        model: TokenizerModel::SentencePieceBpe,
        tokens,
        token_types,
        scores,
        merges: Vec::new(),
        pre: None,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        eos_token_ids: Vec::new(),
        unk_token_id: Some(0),
        pad_token_id: None,
        add_bos_token: false,
        add_eos_token: false,
        chat_template: None,
    }
}

/// Generates a dummy model for `spec`.
pub fn dummy_model(spec: &DummySpec) -> Result<LoadedModel, WeightError> {
    let mut config = dummy_config(spec)?;
    let start = std::time::Instant::now();
    let mut weights = WeightStore::new();
    for (name, shape, fill) in weight_list(&config) {
        let t = make_tensor(&name, shape, fill, spec)?;
        weights.insert(name, t);
    }
    // The dummy tokenizer's end token; the config's ids may lie outside a tiny vocab.
    config.eos_token_ids = vec![2];
    config.bos_token_id = Some(1);
    tracing::info!(
        "generated dummy weights for {} ({} tensors, {:.1} MiB {}) in {:.2}s",
        spec.config,
        weights.len(),
        weights.total_bytes() as f64 / (1 << 20) as f64,
        spec.dtype,
        start.elapsed().as_secs_f64()
    );
    Ok(LoadedModel {
        tokenizer: Some(dummy_tokenizer(config.vocab_size)),
        config,
        weights,
        tokenizer_json: None,
        tokenizer_config_json: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let spec = DummySpec::new("tiny-llama");
        let a = dummy_model(&spec).unwrap();
        let b = dummy_model(&spec).unwrap();
        let name = "model.layers.1.mlp.down_proj.weight";
        assert_eq!(a.weights.get(name).unwrap().bytes(), b.weights.get(name).unwrap().bytes());
        assert_eq!(a.weights.get(name).unwrap().shape, vec![64, 128]);
        assert!(a.weights.contains("lm_head.weight"));
        let other = dummy_model(&DummySpec { seed: 1, ..spec.clone() }).unwrap();
        assert_ne!(a.weights.get(name).unwrap().bytes(), other.weights.get(name).unwrap().bytes());
        let half = dummy_model(&DummySpec { dtype: DType::BF16, ..spec }).unwrap();
        assert_eq!(half.weights.get(name).unwrap().dtype, DType::BF16);
        let vals = a.weights.to_f32(name).unwrap();
        assert!(vals.iter().all(|v| v.abs() <= 1.0 / 128f32.sqrt()) && vals.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn unknown_config_is_a_clear_error() {
        let e = dummy_model(&DummySpec::new("/no/such/model")).unwrap_err().to_string();
        assert!(e.contains("built-in"), "{e}");
        assert!(dummy_model(&DummySpec { dtype: DType::Q4_0, ..DummySpec::new("tiny-llama") }).is_err());
    }
}
