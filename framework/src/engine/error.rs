//! The engine's errors: building one (`LoadError`: architecture, graph, config, weights) and
//! running one (`EngineError`: a bad batch, a failing kernel, setup).

use rtllm_models::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error("{scope}: op '{op}' (plugin {plugin}) failed: {message}")]
    Kernel { scope: String, op: String, plugin: String, message: String },
    #[error("engine setup: {0}")]
    Setup(String),
}

impl EngineError {
    /// A device call of the engine itself (not of a kernel) failed while running a step.
    pub(super) fn device(what: &str, e: crate::device::CudaError) -> EngineError {
        EngineError::Kernel { scope: "engine".into(), op: what.into(), plugin: "engine".into(), message: e.to_string() }
    }
}

/// A setup step's device error, saying which step.
pub(super) fn setup(what: &str) -> impl Fn(crate::device::CudaError) -> EngineError + '_ {
    move |e| EngineError::Setup(format!("{what}: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("architecture '{name}' is not registered (known: {known})")]
    UnknownArchitecture { name: String, known: String },
    #[error("building the graph: {0}")]
    Build(BuildError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("impossible build config: {0}")]
    Config(String),
    #[error("weight '{name}': {message}")]
    Weight { name: String, message: String },
}

impl From<BuildError> for LoadError {
    fn from(e: BuildError) -> Self {
        LoadError::Build(e)
    }
}
