//! What can go wrong converting a model to FP8; every message names the file, tensor or flag.

use crate::engine::{EngineError, LoadError};
use crate::model::ModelError;
use crate::tokenizer::TokenizerError;
use crate::weights::WeightError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    // The big inner errors are boxed: every `Result` of this module stays small.
    #[error("{0}")]
    Model(Box<ModelError>),
    #[error("{path}: {error}")]
    Weights { path: PathBuf, error: Box<WeightError> },
    #[error("building the calibration engine: {0}")]
    Build(Box<LoadError>),
    #[error("calibration: {0}")]
    Engine(Box<EngineError>),
    #[error("calibration text: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// The source is already quantized (or holds tensors this converter does not read).
    #[error("{path}: {message}")]
    AlreadyQuantized { path: PathBuf, message: String },
    /// The model, or something in it, cannot be converted.
    #[error("{0}")]
    Unsupported(String),
    /// The calibration text or its settings.
    #[error("{0}")]
    Calibration(String),
    /// The output directory.
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl From<ModelError> for QuantizeError {
    fn from(e: ModelError) -> Self {
        QuantizeError::Model(Box::new(e))
    }
}

impl From<LoadError> for QuantizeError {
    fn from(e: LoadError) -> Self {
        QuantizeError::Build(Box::new(e))
    }
}

impl From<EngineError> for QuantizeError {
    fn from(e: EngineError) -> Self {
        QuantizeError::Engine(Box::new(e))
    }
}

impl QuantizeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> QuantizeError {
        let path = path.into();
        move |source| QuantizeError::Io { path, source }
    }
}
