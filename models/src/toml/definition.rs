//! `ModelDefinition`: what an engine build (and the `Llm` API, the CLI) takes as "the model's
//! graph": a registered Rust architecture or a TOML model file.

use super::TomlModel;
use crate::arch::{find_architecture, known_architecture_names, Architecture, BuildOptions};
use crate::builder::{BuildError, GraphBuilder};
use crate::config::ModelConfig;
use std::fmt;
use std::sync::Arc;

/// A model definition: either registered in Rust (via inventory) or loaded from TOML.
#[derive(Clone)]
pub enum ModelDefinition {
    Registered(&'static dyn Architecture),
    Toml(Arc<TomlModel>),
}

/// No registered architecture handles a config's `architecture`.
#[derive(Debug, thiserror::Error)]
#[error("architecture '{name}' is not registered (known: {known})")]
pub struct UnknownArchitecture {
    pub name: String,
    pub known: String,
}

impl ModelDefinition {
    /// The registered architecture for an HF `architectures` name (or short name).
    pub fn registered(name: &str) -> Result<Self, UnknownArchitecture> {
        find_architecture(name)
            .map(ModelDefinition::Registered)
            .ok_or_else(|| UnknownArchitecture { name: name.to_string(), known: known_architecture_names().join(", ") })
    }

    /// Loads a TOML model file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, super::TomlError> {
        Ok(ModelDefinition::Toml(Arc::new(TomlModel::from_file(path)?)))
    }

    /// The definition's name (`llama`, or the TOML `[model] name`).
    pub fn name(&self) -> &str {
        match self {
            ModelDefinition::Registered(a) => a.name(),
            ModelDefinition::Toml(t) => t.name(),
        }
    }

    /// Assembles the graph for `config` through `builder`.
    pub fn build(
        &self,
        config: &ModelConfig,
        options: &BuildOptions,
        builder: &mut dyn GraphBuilder,
    ) -> Result<(), BuildError> {
        match self {
            ModelDefinition::Registered(a) => a.build(config, options, builder),
            ModelDefinition::Toml(t) => t.build(config, options, builder),
        }
    }
}

impl From<TomlModel> for ModelDefinition {
    fn from(t: TomlModel) -> Self {
        ModelDefinition::Toml(Arc::new(t))
    }
}

impl fmt::Debug for ModelDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelDefinition::Registered(a) => write!(f, "Registered({})", a.name()),
            ModelDefinition::Toml(t) => write!(f, "Toml({} from {})", t.name(), t.file()),
        }
    }
}
