//! What to load: a [`ModelSpec`] is a [`ModelSource`] (the built-in default model, a GGUF file,
//! an HF directory, an engine directory from `rtllm build`, or dummy weights for a config) and
//! optionally a model definition (a TOML file) assembled over the source's weights instead of
//! the architecture registered for its config. [`ModelSpec::resolve`] checks it against the
//! build config and says what the loader does, refusing combinations that cannot work.

use super::paths::default_model_path;
use super::ModelError;
use crate::engine::serialize;
use crate::engine::BuildConfig;
use crate::weights::dummy::DummySpec;
use rtllm_models::toml::ModelDefinition;
use std::path::{Path, PathBuf};

/// Where a model comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ModelSource {
    /// The built-in default model (SmolLM2-135M-Instruct) in the cache; see
    /// [`super::default_model_path`].
    #[default]
    Default,
    /// A GGUF file, an HF model directory (config.json + safetensors + tokenizer files) or an
    /// engine directory (`rtllm build`), told apart by what is there.
    Path(PathBuf),
    /// Random weights for a config (see `weights::dummy`); never cached.
    Dummy(DummySpec),
}

/// A model definition to assemble instead of the registered architecture.
#[derive(Clone)]
pub enum Definition {
    /// A TOML model file (e.g. models/configs/llama.toml), parsed when the model loads.
    File(PathBuf),
    /// A definition already in memory.
    Given(ModelDefinition),
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Definition::File(p) => f.debug_tuple("File").field(p).finish(),
            Definition::Given(d) => f.debug_tuple("Given").field(&d.name()).finish(),
        }
    }
}

/// A model source and the definition to build it from (default: the registered architecture).
#[derive(Clone, Debug, Default)]
pub struct ModelSpec {
    pub source: ModelSource,
    pub definition: Option<Definition>,
}

/// Where the weights of a model to build come from (a resolved, existing source).
#[derive(Clone, Debug)]
pub(super) enum WeightsFrom {
    Path(PathBuf),
    Dummy(DummySpec),
}

/// What the loader does with a spec.
pub(super) enum Plan {
    /// Load a prebuilt engine directory as it was recorded.
    EngineDir(PathBuf),
    /// Read the weights and build an engine from `definition` (None: the registered one).
    Build { weights: WeightsFrom, definition: Option<ModelDefinition> },
}

impl ModelSpec {
    /// The built-in default model.
    pub fn default_model() -> ModelSpec {
        ModelSpec::default()
    }

    /// A GGUF file, an HF directory or an engine directory.
    pub fn path(path: impl Into<PathBuf>) -> ModelSpec {
        ModelSpec { source: ModelSource::Path(path.into()), definition: None }
    }

    /// Dummy weights for a config.
    pub fn dummy(spec: DummySpec) -> ModelSpec {
        ModelSpec { source: ModelSource::Dummy(spec), definition: None }
    }

    /// Assembles the model from a TOML model file instead of the registered architecture.
    pub fn with_definition_file(mut self, path: impl Into<PathBuf>) -> ModelSpec {
        self.definition = Some(Definition::File(path.into()));
        self
    }

    /// Assembles the model from `definition` instead of the registered architecture.
    pub fn with_definition(mut self, definition: ModelDefinition) -> ModelSpec {
        self.definition = Some(Definition::Given(definition));
        self
    }

    /// What the model is called: its path, the default model's path, or the dummy label.
    pub fn label(&self) -> PathBuf {
        match &self.source {
            ModelSource::Default => default_model_path(),
            ModelSource::Path(p) => p.clone(),
            ModelSource::Dummy(spec) => spec.label(),
        }
    }

    /// Checks the spec against `build` and says what to load. Errors: the default model is not
    /// fetched, the definition file does not parse, or an engine directory is combined with a
    /// model definition, tensor parallelism or another device than it was built for.
    pub(super) fn resolve(&self, build: &BuildConfig) -> Result<Plan, ModelError> {
        let weights = match &self.source {
            ModelSource::Default => {
                let path = default_model_path();
                if !path.exists() {
                    return Err(ModelError::NoDefaultModel(path));
                }
                WeightsFrom::Path(path)
            }
            ModelSource::Path(path) if serialize::is_engine_dir(path) => {
                self.check_engine_dir(path, build)?;
                return Ok(Plan::EngineDir(path.clone()));
            }
            ModelSource::Path(path) => WeightsFrom::Path(path.clone()),
            ModelSource::Dummy(spec) => WeightsFrom::Dummy(spec.clone()),
        };
        let definition = match &self.definition {
            None => None,
            Some(Definition::Given(d)) => Some(d.clone()),
            Some(Definition::File(path)) => Some(
                ModelDefinition::from_toml_file(path)
                    .map_err(|error| ModelError::Definition { path: path.clone(), error })?,
            ),
        };
        Ok(Plan::Build { weights, definition })
    }

    /// An engine directory holds one single-rank engine with its recorded plan.
    fn check_engine_dir(&self, dir: &Path, build: &BuildConfig) -> Result<(), ModelError> {
        let refuse = |why: String| Err(ModelError::BadCombination(format!("{}: {why}", dir.display())));
        if let Some(def) = &self.definition {
            let name = match def {
                Definition::File(p) => p.display().to_string(),
                Definition::Given(d) => d.name().to_string(),
            };
            return refuse(format!(
                "an engine directory records its own plan, so the model definition {name} cannot apply; build the \
                 definition from the model's weights (GGUF file or HF directory) instead"
            ));
        }
        if build.tensor_parallel_size != 1 {
            return refuse(format!(
                "an engine directory holds a single-rank engine, so tensor_parallel_size {} cannot apply; tensor \
                 parallelism builds each rank from the model's weights (GGUF file or HF directory)",
                build.tensor_parallel_size
            ));
        }
        let plan =
            serialize::read_plan(dir).map_err(|error| ModelError::EngineDir { path: dir.to_path_buf(), error })?;
        let device = build.selection.device.to_string();
        if plan.build.device != device {
            return refuse(format!(
                "the engine was built for {}, not {device}; rebuild it with `rtllm build --device {device}`",
                plan.build.device
            ));
        }
        Ok(())
    }
}

impl From<&Path> for ModelSpec {
    fn from(path: &Path) -> ModelSpec {
        ModelSpec::path(path)
    }
}

impl From<PathBuf> for ModelSpec {
    fn from(path: PathBuf) -> ModelSpec {
        ModelSpec::path(path)
    }
}

impl From<DummySpec> for ModelSpec {
    fn from(spec: DummySpec) -> ModelSpec {
        ModelSpec::dummy(spec)
    }
}
