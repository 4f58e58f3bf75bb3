//! Dummy weights: a model built from an HF `config.json` (a path, a directory holding one, or
//! a built-in name from `dummy_configs/`) with random weights (f32, bf16 or f16,
//! deterministic from a seed; made on first use, in parallel on the host or by a GPU kernel) and a byte-fallback dummy tokenizer. For
//! speed work on real shapes without downloads; the output is noise.
//!
//! Weight names and shapes are those of the Llama family (Llama, Mistral, Qwen2, SmolLM):
//! embeddings, per-layer attention (Q/K/V/O, biases when the config asks) and gated MLP,
//! the two RMSNorms, the final norm and an untied `lm_head` when the config has one.
//!
//! With dtype f8_e4m3 the layers' linear weights (q/k/v/o, gate/up/down) are E4M3 codes with a
//! per-channel f32 `weight_scale` and dynamic per-token activations (fbgemm's layout, lm_head
//! and embeddings unquantized, as fbgemm leaves them); every other tensor is bf16. The codes
//! span the whole E4M3 range and the scales bring the dequantized values to the f32 dummy
//! weights' magnitudes.

use super::fill::{name_seed, FillRule};
use super::store::{Tensor, WeightStore};
use super::{LoadedModel, WeightError};
use crate::tokenizer::spec::{TokenType, TokenizerModel, TokenizerSpec};
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
    /// F32, BF16, F16, or F8_E4M3 (FP8 linears, the rest bf16).
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
    let text = crate::input_file::read_regular_string(&file, crate::input_file::TEXT_LIMIT)
        .map_err(|e| WeightError::io(&file, e))?;
    Ok((text, file))
}

/// Reads the config of a spec.
pub fn dummy_config(spec: &DummySpec) -> Result<ModelConfig, WeightError> {
    let (text, path) = config_text(&spec.config)?;
    ModelConfig::from_hf_json(&text).map_err(|source| WeightError::Config { path, source })
}

/// How a tensor is filled.
#[derive(Clone, Copy)]
enum Fill {
    /// Uniform in [-scale, scale].
    Uniform(f32),
    Ones,
    /// A layer's linear weight, uniform in [-scale, scale] (FP8: codes over the E4M3 range and
    /// a per-channel `weight_scale` beside them).
    Linear(f32),
}

/// The per-channel scales of a dummy FP8 linear of `rows` rows whose values should span
/// [-scale, scale]: `scale / 448` times a factor in [0.75, 1.25) per row, from the seed.
fn fp8_channel_scales(name: &str, rows: usize, scale: f32, seed: u64) -> Vec<u8> {
    let rule = FillRule::Uniform { base: name_seed(seed, name), scale: 0.25 };
    (0..rows as u64).flat_map(|r| (scale / 448.0 * (1.0 + rule.element(r))).to_le_bytes()).collect()
}

/// A tensor whose values are generated from the seed and its name when first used (on the
/// host), or on the GPU by the `dummy_fill` op when the engine runs there.
fn make_tensor(name: &str, shape: Vec<usize>, fill: Fill, spec: &DummySpec) -> Result<Tensor, WeightError> {
    let fp8 = spec.dtype == DType::F8_E4M3;
    let (rule, dtype) = match fill {
        Fill::Ones => (FillRule::Ones, spec.dtype),
        Fill::Uniform(scale) | Fill::Linear(scale) => {
            (FillRule::Uniform { base: name_seed(spec.seed, name), scale }, spec.dtype)
        }
    };
    let (rule, dtype) = match (fp8, fill, rule) {
        (true, Fill::Linear(_), FillRule::Uniform { base, .. }) => (FillRule::Uniform { base, scale: 448.0 }, dtype),
        (true, _, rule) => (rule, DType::BF16),
        (false, _, rule) => (rule, dtype),
    };
    Tensor::generated(name, dtype, shape, rule)
        .map_err(|e| not_a_model(Path::new(&spec.config), format!("dummy weights: {e}")))
}

/// The Llama-family weight list for a config: (name, shape, fill).
fn weight_list(c: &ModelConfig) -> Vec<(String, Vec<usize>, Fill)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
    let lin = |fan_in: usize| Fill::Uniform(1.0 / (fan_in.max(1) as f32).sqrt());
    let linear = |fan_in: usize| Fill::Linear(1.0 / (fan_in.max(1) as f32).sqrt());
    let mut w = vec![("model.embed_tokens.weight".to_string(), vec![v, h], Fill::Uniform(1.0))];
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        w.push((p("input_layernorm.weight"), vec![h], Fill::Ones));
        w.push((p("post_attention_layernorm.weight"), vec![h], Fill::Ones));
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            w.push((p(&format!("self_attn.{proj}.weight")), vec![rows, h], linear(h)));
            if c.attention_bias {
                w.push((p(&format!("self_attn.{proj}.bias")), vec![rows], lin(h)));
            }
        }
        w.push((p("self_attn.o_proj.weight"), vec![h, q], linear(q)));
        for (proj, shape, fan_in) in
            [("gate_proj", vec![i, h], h), ("up_proj", vec![i, h], h), ("down_proj", vec![h, i], i)]
        {
            let rows = shape[0];
            w.push((p(&format!("mlp.{proj}.weight")), shape, linear(fan_in)));
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
    let fp8 = spec.dtype == DType::F8_E4M3;
    for (name, shape, fill) in weight_list(&config) {
        if let (true, Fill::Linear(scale), Some(module)) = (fp8, fill, name.strip_suffix(".weight")) {
            let scale_name = format!("{module}.weight_scale");
            let bytes = fp8_channel_scales(&scale_name, shape[0], scale, spec.seed);
            let t = Tensor::owned(&scale_name, DType::F32, vec![shape[0]], bytes)?;
            weights.insert(scale_name, t);
        }
        let t = make_tensor(&name, shape, fill, spec)?;
        weights.insert(name, t);
    }
    if fp8 {
        weights.set_fp8_activation(Some(rtllm_plugin_api::shapes::fp8::Fp8Activation::Dynamic { upper_bound: None }));
    }
    // The dummy tokenizer's end token; the config's ids may lie outside a tiny vocab.
    config.eos_token_ids = vec![2];
    config.bos_token_id = Some(1);
    tracing::info!(
        "dummy weights for {} ({} tensors, {:.1} MiB {}; generated on first use) in {:.2}s",
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

    #[test]
    fn fp8_linears_with_per_channel_scales() {
        let m = dummy_model(&DummySpec { dtype: DType::F8_E4M3, ..DummySpec::new("tiny-llama") }).unwrap();
        let w = m.weights.get("model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!((w.dtype, w.shape.clone()), (DType::F8_E4M3, vec![64, 128]));
        let s = m.weights.get("model.layers.0.mlp.down_proj.weight_scale").unwrap();
        assert_eq!((s.dtype, s.shape.clone()), (DType::F32, vec![64]));
        let scales: Vec<f32> = s.bytes().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let base = 1.0 / 128f32.sqrt() / 448.0;
        assert!(scales.iter().all(|&v| v >= 0.75 * base && v < 1.25 * base), "{scales:?}");
        assert!(scales.iter().any(|&v| v != scales[0]), "per-channel scales differ");
        // Codes cover the E4M3 range (saturating at ±448).
        let codes = w.bytes();
        assert!(codes.contains(&0x7e) && codes.contains(&0xfe));
        for other in ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"] {
            assert_eq!(m.weights.get(other).unwrap().dtype, DType::BF16, "{other}");
        }
        assert!(m.weights.get("lm_head.weight_scale").is_none());
        assert_eq!(
            m.weights.fp8_activation(),
            Some(rtllm_plugin_api::shapes::fp8::Fp8Activation::Dynamic { upper_bound: None })
        );
    }
}
