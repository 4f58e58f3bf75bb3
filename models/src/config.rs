//! `ModelConfig`: the architecture hyper-parameters every model definition reads, parsed from
//! an HF `config.json` with the same defaults as transformers (or filled by the GGUF loader),
//! and validated with errors that name the offending key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use thiserror::Error;

/// A configuration error; messages name the key.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("config.json is not valid JSON: {0}")]
    Json(String),
    #[error("config.json must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("model config: missing required key `{0}`")]
    Missing(String),
    #[error("model config: `{key}` {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.to_string(), message: message.into() }
    }
}

/// RoPE scaling (`rope_scaling` in config.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// "linear", "dynamic", "llama3", "yarn", ... (HF `rope_type`, or the older `type`).
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    /// Any other keys (e.g. yarn's `beta_fast`), kept verbatim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

/// Hyper-parameters of a decoder-only transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// HF `architectures[0]`, e.g. "LlamaForCausalLM", "Qwen2ForCausalLM".
    pub architecture: String,
    /// HF `model_type`, e.g. "llama", "qwen2", "mistral".
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the Q/K/V projections (always true for Qwen2).
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub sliding_window: Option<usize>,
    /// Every other key of the source config, kept verbatim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

/// Reads keys out of a JSON object, removing what it consumes so the rest lands in `extra`.
struct Keys(Map<String, Value>);

impl Keys {
    /// Takes a key, treating JSON `null` as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key).filter(|v| !v.is_null())
    }

    fn usize(&mut self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.take(key).map(|v| as_usize(key, &v)).transpose()
    }

    fn req_usize(&mut self, key: &str) -> Result<usize, ConfigError> {
        self.usize(key)?.ok_or_else(|| ConfigError::Missing(key.to_string()))
    }

    fn f64(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.take(key).map(|v| as_f64(key, &v)).transpose()
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(ConfigError::invalid(key, format!("must be true or false, got {other}"))),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ConfigError::invalid(key, format!("must be a string, got {other}"))),
        }
    }

    fn token_ids(&mut self, key: &str) -> Result<Vec<u32>, ConfigError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(|v| as_u32(key, v)).collect(),
            Some(v) => Ok(vec![as_u32(key, &v)?]),
        }
    }
}

fn as_usize(key: &str, v: &Value) -> Result<usize, ConfigError> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ConfigError::invalid(key, format!("must be a non-negative integer, got {v}")))
}

fn as_u32(key: &str, v: &Value) -> Result<u32, ConfigError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ConfigError::invalid(key, format!("must be a token id (integer), got {v}")))
}

fn as_f64(key: &str, v: &Value) -> Result<f64, ConfigError> {
    v.as_f64().ok_or_else(|| ConfigError::invalid(key, format!("must be a number, got {v}")))
}

/// The HF class name for a `model_type`, for configs without `architectures`.
fn architecture_for(model_type: &str) -> Option<&'static str> {
    Some(match model_type {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => return None,
    })
}

/// The `model_type` for an HF class name, for configs without `model_type`.
fn model_type_for(architecture: &str) -> String {
    match architecture {
        "LlamaForCausalLM" => "llama".into(),
        "Qwen2ForCausalLM" => "qwen2".into(),
        "MistralForCausalLM" => "mistral".into(),
        other => other.trim_end_matches("ForCausalLM").to_ascii_lowercase(),
    }
}

impl RopeScaling {
    /// Parses an HF `rope_scaling` object (`rope_type` or the older `type`). Returns `None` for
    /// `rope_type: "default"`, which means no scaling.
    pub fn from_hf_value(v: Value) -> Result<Option<RopeScaling>, ConfigError> {
        const KEY: &str = "rope_scaling";
        let Value::Object(map) = v else {
            return Err(ConfigError::invalid(KEY, format!("must be an object, got {v}")));
        };
        let mut k = Keys(map);
        let rope_type = match (k.string("rope_type")?, k.string("type")?) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => return Err(ConfigError::Missing("rope_scaling.rope_type".into())),
        };
        if rope_type == "default" {
            return Ok(None);
        }
        let factor =
            k.f64("factor").map_err(nested)?.ok_or_else(|| ConfigError::Missing("rope_scaling.factor".into()))?;
        let low_freq_factor = k.f64("low_freq_factor").map_err(nested)?;
        let high_freq_factor = k.f64("high_freq_factor").map_err(nested)?;
        let original_max_position_embeddings = k.usize("original_max_position_embeddings").map_err(nested)?;
        Ok(Some(RopeScaling {
            rope_type,
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
            extra: k.0.into_iter().collect(),
        }))
    }
}

/// Prefixes a key error with `rope_scaling.`.
fn nested(e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid { key, message } => ConfigError::Invalid { key: format!("rope_scaling.{key}"), message },
        other => other,
    }
}

impl ModelConfig {
    /// Parses an HF `config.json`, applying transformers' defaults: `num_key_value_heads =
    /// num_attention_heads`, `head_dim = hidden_size / num_attention_heads`, Qwen2 always has
    /// Q/K/V bias, `eos_token_id` may be an integer or a list, `rope_scaling` may use `type` or
    /// `rope_type`, and Qwen2's `sliding_window` only applies with `use_sliding_window: true`.
    /// The result is validated.
    pub fn from_hf_json(json: &str) -> Result<ModelConfig, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(ConfigError::NotAnObject(value.to_string()));
        };
        let mut k = Keys(map);

        let architecture = match k.take("architectures") {
            Some(Value::Array(names)) => match names.first() {
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(ConfigError::invalid("architectures", format!("must list strings, got {other}")))
                }
                None => None,
            },
            Some(other) => return Err(ConfigError::invalid("architectures", format!("must be a list, got {other}"))),
            None => None,
        };
        let model_type = k.string("model_type")?;
        let (architecture, model_type) = match (architecture, model_type) {
            (Some(a), Some(t)) => (a, t),
            (Some(a), None) => {
                let t = model_type_for(&a);
                (a, t)
            }
            (None, Some(t)) => match architecture_for(&t) {
                Some(a) => (a.to_string(), t),
                None => return Err(ConfigError::Missing("architectures".into())),
            },
            (None, None) => return Err(ConfigError::Missing("architectures".into())),
        };
        let is_qwen2 = model_type == "qwen2";

        let vocab_size = k.req_usize("vocab_size")?;
        let hidden_size = k.req_usize("hidden_size")?;
        let intermediate_size = k.req_usize("intermediate_size")?;
        let num_hidden_layers = k.req_usize("num_hidden_layers")?;
        let num_attention_heads = k.req_usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(ConfigError::invalid("num_attention_heads", "must be positive"));
        }
        let num_key_value_heads = k.usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        let head_dim = k.usize("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        let rms_norm_eps = k.f64("rms_norm_eps")?.unwrap_or(1e-6);
        let rope_theta = k.f64("rope_theta")?.unwrap_or(10_000.0);
        let rope_scaling = match k.take("rope_scaling") {
            Some(v) => RopeScaling::from_hf_value(v)?,
            None => None,
        };
        let max_position_embeddings = k.usize("max_position_embeddings")?.unwrap_or(2048);
        let tie_word_embeddings = k.bool("tie_word_embeddings")?.unwrap_or(false);
        let attention_bias = k.bool("attention_bias")?.unwrap_or(false) || is_qwen2;
        let mlp_bias = k.bool("mlp_bias")?.unwrap_or(false);
        let bos_token_id = k.token_ids("bos_token_id")?.first().copied();
        let eos_token_ids = k.token_ids("eos_token_id")?;
        let use_sliding_window = k.bool("use_sliding_window")?;
        let sliding_window = k.usize("sliding_window")?;
        let sliding_window = match use_sliding_window {
            Some(false) => None,
            _ if is_qwen2 && use_sliding_window.is_none() => None,
            _ => sliding_window,
        };

        let config = ModelConfig {
            architecture,
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings,
            attention_bias,
            mlp_bias,
            bos_token_id,
            eos_token_ids,
            sliding_window,
            extra: k.0.into_iter().collect(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the hyper-parameters are consistent; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be positive, got 0"));
            }
        }
        if self.architecture.is_empty() {
            return Err(ConfigError::invalid("architectures", "must name an architecture"));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(ConfigError::invalid(
                "num_key_value_heads",
                format!(
                    "({}) must divide num_attention_heads ({})",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(ConfigError::invalid(
                "head_dim",
                format!("must be even for rotary embeddings, got {}", self.head_dim),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(ConfigError::invalid(
                "rms_norm_eps",
                format!("must be a positive number, got {}", self.rms_norm_eps),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ConfigError::invalid(
                "rope_theta",
                format!("must be a positive number, got {}", self.rope_theta),
            ));
        }
        if let Some(s) = &self.rope_scaling {
            if !(s.factor.is_finite() && s.factor > 0.0) {
                return Err(ConfigError::invalid("rope_scaling.factor", format!("must be positive, got {}", s.factor)));
            }
            if s.rope_type == "llama3" {
                for (key, present) in [
                    ("rope_scaling.low_freq_factor", s.low_freq_factor.is_some()),
                    ("rope_scaling.high_freq_factor", s.high_freq_factor.is_some()),
                    ("rope_scaling.original_max_position_embeddings", s.original_max_position_embeddings.is_some()),
                ] {
                    if !present {
                        return Err(ConfigError::Missing(key.into()));
                    }
                }
            }
        }
        if self.sliding_window == Some(0) {
            return Err(ConfigError::invalid("sliding_window", "must be positive when set"));
        }
        let ids = self.bos_token_id.iter().map(|id| ("bos_token_id", id));
        for (key, id) in ids.chain(self.eos_token_ids.iter().map(|id| ("eos_token_id", id))) {
            if *id as usize >= self.vocab_size {
                return Err(ConfigError::invalid(key, format!("{id} is outside the vocabulary ({})", self.vocab_size)));
            }
        }
        Ok(())
    }

    /// Query heads per KV head (grouped-query attention).
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads.max(1)
    }

    /// Width of the Q projection output (`num_attention_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of each of the K and V projection outputs (`num_key_value_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests;
