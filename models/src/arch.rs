//! Architecture registration: each architecture registers itself with `inventory`, keyed by
//! the HF `architectures` names it handles, and builds its graph through a `GraphBuilder`.

use crate::builder::{BuildError, GraphBuilder};
use crate::config::ModelConfig;
use crate::parallel::Parallel;
use rtllm_plugin_api::DType;

/// Options of a build that a model definition may read.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The dtype of the KV cache pools.
    pub kv_cache_dtype: DType,
    /// Which rank of the parallel layout this graph is for (one rank by default).
    pub parallel: Parallel,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { kv_cache_dtype: DType::F32, parallel: Parallel::single() }
    }
}

/// A model architecture.
pub trait Architecture: Sync {
    /// A short name, e.g. "llama".
    fn name(&self) -> &'static str;
    /// The HF `architectures` names it handles, e.g. "LlamaForCausalLM".
    fn hf_names(&self) -> &'static [&'static str];
    /// Whether `build` honours `options.parallel` with more than one tensor-parallel rank
    /// (shards its weights, adds the collectives). The runtime refuses to split models that
    /// do not.
    fn supports_tensor_parallel(&self) -> bool {
        false
    }
    /// Assembles the graph for this config. Must declare the inputs of [`crate::io`] it uses
    /// and the `logits` output.
    fn build(
        &self,
        config: &ModelConfig,
        options: &BuildOptions,
        builder: &mut dyn GraphBuilder,
    ) -> Result<(), BuildError>;
}

/// An inventory entry: `inventory::submit! { ArchitectureEntry(&MyArch) }`.
pub struct ArchitectureEntry(pub &'static dyn Architecture);

inventory::collect!(ArchitectureEntry);

/// Every registered architecture, sorted by name.
pub fn architectures() -> Vec<&'static dyn Architecture> {
    let mut all: Vec<_> = inventory::iter::<ArchitectureEntry>.into_iter().map(|e| e.0).collect();
    all.sort_by_key(|a| a.name());
    all
}

/// The architecture for an HF `architectures` name (or a short name).
pub fn find_architecture(name: &str) -> Option<&'static dyn Architecture> {
    architectures().into_iter().find(|a| a.name() == name || a.hf_names().contains(&name))
}

/// All HF names registered, for error messages.
pub fn known_architecture_names() -> Vec<&'static str> {
    architectures().into_iter().flat_map(|a| a.hf_names().iter().copied()).collect()
}
