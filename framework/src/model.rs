//! A loaded model ready to generate: config, tokenizer, engine and its KV block pool, from a
//! GGUF file or an HF directory. Also where the built-in default model lives.

use crate::engine::{build_engine, build_engine_with, BuildConfig, Engine, LoadError, WeightMetas, WeightSource};
use rtllm_models::toml::ModelDefinition;
use crate::registry::Registry;
use crate::runtime::{generate, BlockPool, Generation, RuntimeError};
use crate::sampling::SamplingParams;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::{load_model_source, WeightError, WeightStore};
use rtllm_models::ModelConfig;
use rtllm_plugin_api::TensorMeta;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// File name of the built-in default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cache directory: `RTLLM_CACHE_DIR`, else `~/.cache/rtllm`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RTLLM_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("rtllm")
}

/// Where the default model is once `scripts/fetch-default-model.sh` has run.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models").join(DEFAULT_MODEL_FILE)
}

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
}

impl WeightMetas for WeightStore {
    fn weight_meta(&self, name: &str) -> Option<TensorMeta> {
        self.get(name).map(|t| t.meta())
    }

    fn nearest_weight_names(&self, name: &str) -> Vec<String> {
        self.nearest_names(name, 3).into_iter().map(String::from).collect()
    }
}

impl WeightSource for WeightStore {
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|t| t.bytes())
    }
}

/// A model with everything needed to generate.
pub struct Model {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub engine: Engine,
    pub blocks: BlockPool,
    pub load_time: Duration,
}

impl Model {
    /// Loads `path` (a .gguf file or an HF directory) and builds its engine.
    pub fn load(path: &Path, registry: &Registry, build: &BuildConfig) -> Result<Model, ModelError> {
        Model::load_inner(path, None, registry, build)
    }

    /// Loads the weights, config and tokenizer of `path` (a .gguf file or an HF directory) and
    /// builds the engine from `definition` (e.g. a TOML model file) instead of the
    /// architecture registered for the config.
    pub fn load_with_definition(path: &Path, definition: &ModelDefinition, registry: &Registry, build: &BuildConfig) -> Result<Model, ModelError> {
        Model::load_inner(path, Some(definition), registry, build)
    }

    fn load_inner(path: &Path, definition: Option<&ModelDefinition>, registry: &Registry, build: &BuildConfig) -> Result<Model, ModelError> {
        let start = Instant::now();
        let err_path = || path.to_path_buf();
        let loaded = load_model_source(path).map_err(|error| ModelError::Weights { path: err_path(), error })?;
        let tokenizer = if let Some(json) = &loaded.tokenizer_json {
            Tokenizer::from_hf_file(json, loaded.tokenizer_config_json.as_deref())
        } else if let Some(spec) = loaded.tokenizer.clone() {
            Tokenizer::from_spec(spec)
        } else {
            return Err(ModelError::NoTokenizer { path: err_path() });
        }
        .map_err(|error| ModelError::Tokenizer { path: err_path(), error })?;
        let weights: Arc<dyn WeightSource> = Arc::new(loaded.weights);
        let engine = match definition {
            Some(def) => build_engine_with(def, &loaded.config, weights, registry, build),
            None => build_engine(&loaded.config, weights, registry, build),
        }
        .map_err(|error| ModelError::Build { path: err_path(), error })?;
        let blocks = BlockPool::new(engine.limits().num_kv_blocks);
        Ok(Model { path: path.to_path_buf(), config: loaded.config, tokenizer, engine, blocks, load_time: start.elapsed() })
    }

    /// Loads the built-in default model from the cache.
    pub fn load_default(registry: &Registry, build: &BuildConfig) -> Result<Model, ModelError> {
        let path = default_model_path();
        if !path.exists() {
            return Err(ModelError::NoDefaultModel(path));
        }
        Model::load(&path, registry, build)
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = self.tokenizer.eos_token_ids();
        ids.extend(self.config.eos_token_ids.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Generates from prompt token ids; `on_token` sees each new token.
    pub fn generate_ids(&mut self, prompt: &[u32], params: &SamplingParams, on_token: impl FnMut(u32)) -> Result<Generation, RuntimeError> {
        let eos = self.eos_ids();
        generate(&mut self.engine, &mut self.blocks, prompt, params, &eos, on_token)
    }
}
