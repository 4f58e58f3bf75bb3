//! `WeightError`: everything that can go wrong loading weights; messages name the file and,
//! where there is one, the tensor.

use super::gguf::GgufError;
use rtllm_models::ConfigError;
use rtllm_plugin_api::{DType, PluginError};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WeightError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} (GGUF): {source}", path.display())]
    Gguf { path: PathBuf, source: GgufError },
    #[error("{}: malformed safetensors file: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    #[error("{}: tensor `{tensor}` has unsupported dtype {dtype} (supported: {supported})", path.display())]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: String, supported: &'static str },
    #[error("{}: unsupported architecture `{arch}` (supported: {supported})", path.display())]
    UnsupportedArchitecture { path: PathBuf, arch: String, supported: &'static str },
    #[error("{}: missing metadata `{key}`", path.display())]
    MissingMetadata { path: PathBuf, key: String },
    #[error("{}: invalid model config: {source}", path.display())]
    Config { path: PathBuf, source: ConfigError },
    #[error("{}: tensor `{tensor}`: {message}", path.display())]
    Tensor { path: PathBuf, tensor: String, message: String },
    #[error("missing weight `{name}`{}", did_you_mean(.suggestions))]
    Missing { name: String, suggestions: Vec<String> },
    #[error("{}: tensor `{tensor}` appears in more than one file", path.display())]
    Duplicate { path: PathBuf, tensor: String },
    #[error("tensor `{tensor}` ({from}) cannot be converted to {to}: {source}")]
    Convert { tensor: String, from: DType, to: DType, source: PluginError },
    #[error("{}: not a model source: {message}", path.display())]
    NotAModel { path: PathBuf, message: String },
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))
    }
}

impl WeightError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WeightError::Io { path: path.into(), source }
    }

    pub(crate) fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, message: impl Into<String>) -> Self {
        WeightError::Tensor { path: path.into(), tensor: tensor.into(), message: message.into() }
    }
}
