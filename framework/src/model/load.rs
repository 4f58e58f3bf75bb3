//! The one loader. [`Model::load`] turns a [`ModelSpec`] and a [`BuildConfig`] into a
//! [`Model`]: an engine directory as it was recorded; otherwise the source (GGUF file, HF
//! directory, dummy weights) is read once and built from its definition into one engine
//! (through the engine cache, for files) or, with `tensor_parallel_size > 1`, split across
//! ranks. [`write_engine_dir`] (`rtllm build`) reads sources the same way.

use super::source::{Plan, WeightsFrom};
use super::{Model, ModelError, ModelSpec};
use crate::engine::cache::{self, CacheKey, EngineCache};
use crate::engine::serialize::{self, EngineDirInfo, SerializeError, TokenizerSource};
use crate::engine::{
    build_parts, plan_graph, registered_definition, BuildConfig, Engine, Graph, LoadError, WeightMetas, WeightSource,
};
use crate::parallel::{self, ModelEngine};
use crate::registry::Registry;
use crate::tokenizer::Tokenizer;
use crate::weights::dummy::dummy_model;
use crate::weights::{load_model_source, LoadedModel, WeightStore};
use rtllm_models::toml::ModelDefinition;
use rtllm_models::ModelConfig;
use rtllm_plugin_api::TensorMeta;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

impl WeightMetas for WeightStore {
    fn weight_meta(&self, name: &str) -> Option<TensorMeta> {
        self.get(name).map(|t| t.meta())
    }

    fn nearest_weight_names(&self, name: &str) -> Vec<String> {
        self.nearest_names(name, 3).into_iter().map(String::from).collect()
    }

    fn fp8_activation(&self) -> Option<rtllm_plugin_api::shapes::fp8::Fp8Activation> {
        WeightStore::fp8_activation(self)
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

/// What a load produced, before it is named and timed.
struct Loaded {
    config: ModelConfig,
    tokenizer: Tokenizer,
    engine: ModelEngine,
}

impl Model {
    /// Loads `spec` built with `build`: one engine, or `build.tensor_parallel_size` ranks.
    /// Every front end (CLI, `Llm::builder`, server, bench) loads through here.
    pub fn load(spec: &ModelSpec, registry: &Arc<Registry>, build: &BuildConfig) -> Result<Model, ModelError> {
        let start = Instant::now();
        let path = spec.label();
        let loaded = match spec.resolve(build)? {
            Plan::EngineDir(dir) => {
                load_engine_dir(&dir, registry).map_err(|error| ModelError::EngineDir { path: dir.clone(), error })?
            }
            Plan::Build { weights, definition } if build.tensor_parallel_size != 1 => {
                read_source(&weights, definition, &path, build)?.start_ranks(registry.clone())?
            }
            Plan::Build { weights, definition } => load_single(&weights, definition, &path, registry, build)?,
        };
        Ok(Model {
            path,
            config: loaded.config,
            tokenizer: loaded.tokenizer,
            engine: loaded.engine,
            load_time: start.elapsed(),
            registry: registry.clone(),
        })
    }
}

/// Builds `spec` into an engine directory at `out` (which must not hold anything yet) and
/// returns the engine. Refuses engine directories and tensor parallelism: a directory holds
/// one single-rank engine built from weights.
pub fn write_engine_dir(
    spec: &ModelSpec,
    registry: &Registry,
    build: &BuildConfig,
    out: &Path,
) -> Result<Engine, ModelError> {
    let path = spec.label();
    if build.tensor_parallel_size != 1 {
        return Err(ModelError::BadCombination(format!(
            "an engine directory holds a single-rank engine, so tensor_parallel_size {} cannot be built into one; \
             tensor parallelism applies when a model is loaded from its weights",
            build.tensor_parallel_size
        )));
    }
    let (weights, definition) = match spec.resolve(build)? {
        Plan::EngineDir(dir) => {
            return Err(ModelError::BadCombination(format!("{} is already an engine directory", dir.display())))
        }
        Plan::Build { weights, definition } => (weights, definition),
    };
    let source = read_source(&weights, definition, &path, build)?;
    let parts = build_parts(&source.definition, &source.config, source.weights.clone(), registry, &source.build)
        .map_err(|error| ModelError::Build { path: path.clone(), error })?;
    let dir_err = |error| ModelError::EngineDir { path: out.to_path_buf(), error };
    std::fs::create_dir_all(out).map_err(|source| dir_err(SerializeError::Io { path: out.to_path_buf(), source }))?;
    let info = source.dir_info();
    let (engine, written) = serialize::write_engine_dir(out, parts, &info);
    let engine = engine.map_err(|error| ModelError::Build { path, error })?;
    written.map_err(dir_err)?;
    Ok(engine)
}

/// The planned graph of `spec` built with `build` (rank 0 of `build.tensor_parallel_size`) and
/// a title naming the model, definition, device and rank: selection, inference and the passes,
/// no device and no kernels (`rtllm build --explain`). Engine directories are refused: their
/// plan is in their plan.json.
pub fn plan_model(spec: &ModelSpec, registry: &Registry, build: &BuildConfig) -> Result<(Graph, String), ModelError> {
    let path = spec.label();
    let (weights, definition) = match spec.resolve(build)? {
        Plan::EngineDir(dir) => {
            return Err(ModelError::BadCombination(format!(
                "{} is an engine directory: its plan is recorded in its plan.json",
                dir.display()
            )))
        }
        Plan::Build { weights, definition } => (weights, definition),
    };
    let source = read_source(&weights, definition, &path, build)?;
    let tp = build.tensor_parallel_size;
    let rank0 = parallel::tensor_parallel_ranks(tp).map_err(source.build_err())?.into_iter().next().unwrap_or_default();
    let graph =
        plan_graph(&source.definition, &source.config, source.weights.as_ref(), registry, &source.build, &rank0)
            .map_err(source.build_err())?;
    let rank = if tp > 1 { format!(", rank 0 of {tp}") } else { String::new() };
    let title = format!("{} ({}) on {}{rank}", path.display(), source.definition.name(), build.selection.device);
    Ok((graph, title))
}

/// A source read into memory: what building it needs.
struct Source {
    path: PathBuf,
    /// The build config with what the weights decide settled (the KV cache dtype).
    build: BuildConfig,
    config: ModelConfig,
    weights: Arc<dyn WeightSource>,
    tokenizer: Tokenizer,
    tokenizer_source: TokenizerSource,
    definition: ModelDefinition,
}

/// Reads the weights, config and tokenizer; `definition` defaults to the registered one.
fn read_source(
    weights: &WeightsFrom,
    definition: Option<ModelDefinition>,
    path: &Path,
    build: &BuildConfig,
) -> Result<Source, ModelError> {
    let mut loaded = match weights {
        WeightsFrom::Path(p) => load_model_source(p),
        WeightsFrom::Dummy(spec) => dummy_model(spec),
    }
    .map_err(|error| ModelError::Weights { path: path.to_path_buf(), error })?;
    let (tokenizer, tokenizer_source) = tokenizer_of(path, &loaded)?;
    let definition = match definition {
        Some(d) => d,
        None => registered_definition(&loaded.config)
            .map_err(|error| ModelError::Build { path: path.to_path_buf(), error })?,
    };
    let build = settle_kv_cache(build, &mut loaded.weights, &loaded.config);
    Ok(Source {
        path: path.to_path_buf(),
        build,
        config: loaded.config,
        weights: Arc::new(loaded.weights),
        tokenizer,
        tokenizer_source,
        definition,
    })
}

/// The KV cache dtype the weights call for: F8_E4M3 when the checkpoint declares an FP8 KV
/// cache and the user named no dtype; an FP8 cache gets scale 1.0 for every layer without one.
fn settle_kv_cache(build: &BuildConfig, weights: &mut WeightStore, config: &ModelConfig) -> BuildConfig {
    let mut build = build.clone();
    if weights.kv_cache_fp8() && build.kv_cache_dtype_from_checkpoint {
        build.kv_cache_dtype = rtllm_plugin_api::DType::F8_E4M3;
    }
    if build.kv_cache_dtype == rtllm_plugin_api::DType::F8_E4M3 {
        crate::weights::kv_scales::default_missing(weights, config.num_hidden_layers);
    }
    build
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

impl Source {
    fn build_err(&self) -> impl Fn(LoadError) -> ModelError + '_ {
        |error| ModelError::Build { path: self.path.clone(), error }
    }

    fn dir_info(&self) -> EngineDirInfo<'_> {
        EngineDirInfo {
            definition: self.definition.name(),
            config: &self.config,
            build: &self.build,
            tokenizer: &self.tokenizer_source,
        }
    }

    /// Starts `build.tensor_parallel_size` ranks over the weights (each builds its engine).
    fn start_ranks(self, registry: Arc<Registry>) -> Result<Loaded, ModelError> {
        let engine =
            parallel::start_engine(&self.definition, &self.config, self.weights.clone(), registry, &self.build)
                .map_err(self.build_err())?;
        Ok(Loaded { config: self.config, tokenizer: self.tokenizer, engine: ModelEngine::TensorParallel(engine) })
    }

    /// Builds one engine; with `cache`, also writes it as the cache entry `key`.
    fn build_single(self, registry: &Registry, cache: Option<(&EngineCache, &CacheKey)>) -> Result<Loaded, ModelError> {
        let parts = build_parts(&self.definition, &self.config, self.weights.clone(), registry, &self.build)
            .map_err(self.build_err())?;
        let Some((cache, key)) = cache else {
            let engine = parts.into_engine().map_err(self.build_err())?;
            return Ok(self.into_loaded(engine));
        };
        let info = self.dir_info();
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
        let engine = match (engine, parts) {
            (Some(made), _) => made,
            (None, Some(parts)) => parts.into_engine(),
            (None, None) => {
                Err(LoadError::Config("the engine cache writer consumed the build without an engine".into()))
            }
        }
        .map_err(self.build_err())?;
        Ok(self.into_loaded(engine))
    }

    fn into_loaded(self, engine: Engine) -> Loaded {
        Loaded { config: self.config, tokenizer: self.tokenizer, engine: ModelEngine::Single(engine) }
    }
}

/// One engine from weights. A file source goes through the engine cache (unless the build
/// or `RTLLM_NO_BUILD_CACHE` turns it off): a cached engine loads without reading the source;
/// a fresh build is stored.
fn load_single(
    weights: &WeightsFrom,
    definition: Option<ModelDefinition>,
    path: &Path,
    registry: &Registry,
    build: &BuildConfig,
) -> Result<Loaded, ModelError> {
    let file = match weights {
        WeightsFrom::Path(p) if build.use_engine_cache && !build.observe_matmul_inputs && !cache::disabled_by_env() => {
            p
        }
        _ => return read_source(weights, definition, path, build)?.build_single(registry, None),
    };
    let cache = EngineCache::default_location();
    let key = cache::cache_key(file, build, definition.as_ref(), registry)
        .map_err(|e| tracing::warn!("engine cache disabled for {}: {e}", file.display()))
        .ok();
    if let Some(dir) = key.as_ref().and_then(|k| cache.lookup(k)) {
        match load_engine_dir(&dir, registry) {
            Ok(loaded) => {
                cache::record_hit();
                tracing::info!("loaded {} from the engine cache ({})", path.display(), dir.display());
                return Ok(loaded);
            }
            Err(e) => cache.evict(&dir, &e.to_string()),
        }
    }
    read_source(weights, definition, path, build)?.build_single(registry, key.as_ref().map(|k| (&cache, k)))
}

/// Loads an engine directory (from `rtllm build` or the cache).
fn load_engine_dir(dir: &Path, registry: &Registry) -> Result<Loaded, SerializeError> {
    let (plan, engine) = serialize::load_engine(dir, registry)?;
    let tokenizer = serialize::read_tokenizer(dir)?;
    Ok(Loaded { config: plan.model_config, tokenizer, engine: ModelEngine::Single(engine) })
}
