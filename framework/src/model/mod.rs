//! Models: what to load ([`ModelSpec`]: the built-in default, a GGUF file, an HF directory,
//! an engine directory, dummy weights, optionally a TOML definition), the one loader that
//! turns a spec and a build config into a [`Model`] (one engine or tensor-parallel ranks,
//! through the engine cache), and where models live on disk.
//!
//! - `paths`: the cache directory and the default model's path.
//! - `source`: [`ModelSpec`] / [`ModelSource`] and the checks of impossible combinations.
//! - `load`: [`Model::load`] and [`write_engine_dir`] (`rtllm build`).

mod load;
mod paths;
mod source;

pub(crate) use load::tokenizer_of;
pub use load::{plan_model, write_engine_dir};
pub use paths::{cache_dir, default_model_path, DEFAULT_MODEL_FILE};
pub use source::{Definition, ModelSource, ModelSpec};

use crate::engine::serialize::SerializeError;
use crate::engine::LoadError;
use crate::parallel::ModelEngine;
use crate::registry::Registry;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::WeightError;
use rtllm_models::toml::TomlError;
use rtllm_models::ModelConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // The inner errors are shown in the message, not chained as sources, so error printers
    // that walk the chain do not repeat them.
    #[error("{path}: {error}")]
    Weights { path: PathBuf, error: WeightError },
    #[error("{path}: tokenizer: {error}")]
    Tokenizer { path: PathBuf, error: TokenizerError },
    #[error("{path}: no tokenizer found (GGUF metadata or tokenizer.json)")]
    NoTokenizer { path: PathBuf },
    #[error("{path}: {error}")]
    Build { path: PathBuf, error: LoadError },
    #[error("default model not found at {0}: run scripts/fetch-default-model.sh (or pass --model)")]
    NoDefaultModel(PathBuf),
    #[error("{path}: engine directory: {error}")]
    EngineDir { path: PathBuf, error: SerializeError },
    #[error("{path}: model definition: {error}")]
    Definition { path: PathBuf, error: TomlError },
    /// The spec and the build config ask for something that cannot be done together.
    #[error("{0}")]
    BadCombination(String),
}

/// A loaded model, ready to start an executor (`api::Llm::start`): its config, tokenizer and
/// engine (one, or split across tensor-parallel ranks).
pub struct Model {
    /// What the model is called: its path (the source's, for an engine cache hit) or the
    /// dummy label.
    pub path: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub engine: ModelEngine,
    pub load_time: Duration,
    /// The plugins the engine's kernels come from, kept as long as the model.
    pub registry: Arc<Registry>,
}

impl Model {
    /// Token ids that end generation: the tokenizer's and the config's end-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = self.tokenizer.eos_token_ids();
        ids.extend(self.config.eos_token_ids.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
