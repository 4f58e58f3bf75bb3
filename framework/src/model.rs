//! A loaded model ready to generate: config, tokenizer, engine and its KV block pool, from a
//! GGUF file, an HF directory, an engine directory (`rtllm build`) or dummy weights; loads go
//! through the engine cache (`engine::cache`). Also where the built-in default model lives.

use crate::engine::cache::{self, EngineCache};
use crate::engine::serialize::{self, EngineDirInfo, SerializeError, TokenizerSource};
use crate::engine::{build_parts, registered_definition, BuildConfig, Engine, LoadError, WeightMetas, WeightSource};
use crate::parallel::ModelRunner;
use crate::registry::Registry;
use crate::runtime::{generate, BlockPool, Generation, RuntimeError};
use crate::sampling::SamplingParams;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::dummy::DummySpec;
use crate::weights::{load_model_source, LoadedModel, WeightError, WeightStore};
use rtllm_models::toml::ModelDefinition;
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

/// While loading, keeps glibc from holding freed memory: big allocations (≥ 128 KiB: KV pools,
/// the arena, file buffers) get their own mappings, so pages never written (a KV pool's scratch
/// block, blocks no sequence reached) are not resident and freed ones go back at once. glibc
/// raises that threshold after each big free otherwise, and the KV pools land in the heap.
/// [`release_freed_heap`] raises it again once loaded.
fn limit_heap_retention() {
    set_mmap_threshold(128 * 1024);
}

fn set_mmap_threshold(bytes: std::ffi::c_int) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only changes allocator tuning; setting the threshold is thread-safe.
        unsafe { mallopt(M_MMAP_THRESHOLD, bytes) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// Hands the heap pages freed while loading (tokenizer parsing, plan JSON, build scratch) back
/// to the OS: glibc keeps them resident otherwise, a few MiB of peak RSS while generating.
/// Then lets per-step buffers below 1 MiB (a logits row) reuse heap memory instead of mapping
/// and faulting in fresh pages every step.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it is thread-safe.
        unsafe { malloc_trim(0) };
    }
    set_mmap_threshold(1 << 20);
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
    #[error("{path}: engine directory: {error}")]
    EngineDir { path: PathBuf, error: SerializeError },
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

    fn weight_fill(&self, name: &str) -> Option<crate::weights::FillRule> {
        self.get(name).and_then(|t| t.fill_rule())
    }
}

/// A model with everything needed to generate: one engine, or (`Model<TensorParallelEngine>`,
/// from `rtllm::parallel::load_model`) one split across ranks.
pub struct Model<R = Engine> {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub engine: R,
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
    pub fn load_with_definition(
        path: &Path,
        definition: &ModelDefinition,
        registry: &Registry,
        build: &BuildConfig,
    ) -> Result<Model, ModelError> {
        Model::load_inner(path, Some(definition), registry, build)
    }

    fn load_inner(
        path: &Path,
        definition: Option<&ModelDefinition>,
        registry: &Registry,
        build: &BuildConfig,
    ) -> Result<Model, ModelError> {
        let start = Instant::now();
        limit_heap_retention();
        if serialize::is_engine_dir(path) {
            if definition.is_some() {
                tracing::warn!(
                    "{} is an engine directory: its recorded plan is used, not the given model definition",
                    path.display()
                );
            }
            return Model::load_engine_dir(path, path, registry, start)
                .map_err(|error| ModelError::EngineDir { path: path.to_path_buf(), error });
        }
        let cache = (build.use_engine_cache && !cache::disabled_by_env()).then(EngineCache::default_location);
        let key = match &cache {
            Some(_) => cache::cache_key(path, build, definition, registry)
                .map_err(|e| tracing::warn!("engine cache disabled for {}: {e}", path.display()))
                .ok(),
            None => None,
        };
        if let (Some(cache), Some(key)) = (&cache, &key) {
            if let Some(dir) = cache.lookup(key) {
                match Model::load_engine_dir(&dir, path, registry, start) {
                    Ok(model) => {
                        cache::record_hit();
                        tracing::info!("loaded {} from the engine cache ({})", path.display(), dir.display());
                        return Ok(model);
                    }
                    Err(e) => cache.evict(&dir, &e.to_string()),
                }
            }
        }
        let loaded =
            load_model_source(path).map_err(|error| ModelError::Weights { path: path.to_path_buf(), error })?;
        let target = cache.zip(key);
        Model::from_loaded(path, loaded, definition, registry, build, target.as_ref().map(|(c, k)| (c, k)), start)
    }

    /// Builds from a loaded source; with `cache`, also writes the engine cache entry.
    fn from_loaded(
        path: &Path,
        loaded: LoadedModel,
        definition: Option<&ModelDefinition>,
        registry: &Registry,
        build: &BuildConfig,
        cache: Option<(&EngineCache, &cache::CacheKey)>,
        start: Instant,
    ) -> Result<Model, ModelError> {
        let err_path = || path.to_path_buf();
        let (tokenizer, tokenizer_source) = tokenizer_of(path, &loaded)?;
        let build_err = |error| ModelError::Build { path: err_path(), error };
        let definition = match definition {
            Some(d) => d.clone(),
            None => registered_definition(&loaded.config).map_err(build_err)?,
        };
        let weights: Arc<dyn WeightSource> = Arc::new(loaded.weights);
        let parts = build_parts(&definition, &loaded.config, weights, registry, build).map_err(build_err)?;
        let engine = match cache {
            None => parts.into_engine(),
            Some((cache, key)) => {
                let info = EngineDirInfo {
                    definition: definition.name(),
                    config: &loaded.config,
                    build,
                    tokenizer: &tokenizer_source,
                };
                let mut parts = Some(parts);
                let mut engine = None;
                let stored = cache.store(key, |dir| {
                    let Some(parts) = parts.take() else { return Ok(()) };
                    let (made, written) = serialize::write_engine_dir(dir, parts, &info);
                    engine = Some(made);
                    written
                });
                match &stored {
                    Ok(dir) => tracing::info!("wrote engine cache entry {}", dir.display()),
                    Err(e) => tracing::warn!("could not write the engine cache entry: {e}"),
                }
                match (engine, parts) {
                    (Some(made), _) => made,
                    (None, Some(parts)) => parts.into_engine(),
                    (None, None) => {
                        Err(LoadError::Config("the engine cache writer consumed the build without an engine".into()))
                    }
                }
            }
        }
        .map_err(build_err)?;
        let blocks = BlockPool::new(engine.limits().num_kv_blocks);
        release_freed_heap();
        Ok(Model {
            path: path.to_path_buf(),
            config: loaded.config,
            tokenizer,
            engine,
            blocks,
            load_time: start.elapsed(),
        })
    }

    /// Loads an engine directory (from `rtllm build` or the cache); `path` is what the model
    /// is called (the source path for a cache hit).
    fn load_engine_dir(dir: &Path, path: &Path, registry: &Registry, start: Instant) -> Result<Model, SerializeError> {
        let (plan, engine) = serialize::load_engine(dir, registry)?;
        let tokenizer = serialize::read_tokenizer(dir)?;
        let blocks = BlockPool::new(engine.limits().num_kv_blocks);
        release_freed_heap();
        Ok(Model {
            path: path.to_path_buf(),
            config: plan.model_config,
            tokenizer,
            engine,
            blocks,
            load_time: start.elapsed(),
        })
    }

    /// A model with random weights for `spec` (see `weights::dummy`); never cached.
    pub fn load_dummy(spec: &DummySpec, registry: &Registry, build: &BuildConfig) -> Result<Model, ModelError> {
        let start = Instant::now();
        let label = spec.label();
        let loaded = crate::weights::dummy::dummy_model(spec)
            .map_err(|error| ModelError::Weights { path: label.clone(), error })?;
        Model::from_loaded(&label, loaded, None, registry, build, None, start)
    }

    /// Loads the built-in default model from the cache.
    pub fn load_default(registry: &Registry, build: &BuildConfig) -> Result<Model, ModelError> {
        let path = default_model_path();
        if !path.exists() {
            return Err(ModelError::NoDefaultModel(path));
        }
        Model::load(&path, registry, build)
    }
}

/// The tokenizer of a loaded source (its tokenizer.json, else the GGUF spec) and where it came from.
pub(crate) fn tokenizer_of(path: &Path, loaded: &LoadedModel) -> Result<(Tokenizer, TokenizerSource), ModelError> {
    let err_path = || path.to_path_buf();
    let (tokenizer, source) = if let Some(json) = &loaded.tokenizer_json {
        let t = Tokenizer::from_hf_file(json, loaded.tokenizer_config_json.as_deref());
        (t, TokenizerSource::HfFiles { json: json.clone(), config: loaded.tokenizer_config_json.clone() })
    } else if let Some(spec) = loaded.tokenizer.clone() {
        (Tokenizer::from_spec(spec.clone()), TokenizerSource::Spec(spec))
    } else {
        return Err(ModelError::NoTokenizer { path: err_path() });
    };
    let tokenizer = tokenizer.map_err(|error| ModelError::Tokenizer { path: err_path(), error })?;
    Ok((tokenizer, source))
}

impl<R: ModelRunner> Model<R> {
    /// Token ids that end generation.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = self.tokenizer.eos_token_ids();
        ids.extend(self.config.eos_token_ids.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Generates from prompt token ids; `on_token` sees each new token.
    pub fn generate_ids(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        on_token: impl FnMut(u32),
    ) -> Result<Generation, RuntimeError> {
        let eos = self.eos_ids();
        generate(&mut self.engine, &mut self.blocks, prompt, params, &eos, on_token)
    }
}
