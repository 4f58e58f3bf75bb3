//! Model quality as numbers, through the `Llm` API (the executor's prompt log-probabilities, the
//! one generation path): `perplexity` of a model over a text in sliding windows (Hugging Face's
//! perplexity guide), and `compare` of two models (greedy agreement, teacher-forced top-1
//! agreement and KL). `rtllm eval` is their command line.

pub mod compare;
pub mod perplexity;
pub mod windows;

pub use compare::{compare, CompareReport, PromptComparison, DEFAULT_PROMPTS};
pub use perplexity::{default_context, perplexity, PerplexityReport};
pub use windows::{plan, Window, WindowError};

use crate::api::LlmError;
use crate::input_file;
use std::path::{Path, PathBuf};

/// The most bytes an evaluation text may have (a whole book is under 1 MB; wikitext-103's
/// test split is 1.3 MB).
pub const TEXT_LIMIT: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is empty: there is nothing to evaluate", path.display())]
    Empty { path: PathBuf },
    #[error(transparent)]
    Windows(#[from] WindowError),
    #[error("a context length of {context} needs max_seq_len >= {} (the window and the one token each request generates), but the engine's is {max_seq_len}; pass --max-seq-len or a smaller --context-len", context + 1)]
    ContextExceedsEngine { context: usize, max_seq_len: usize },
    #[error("no prompts to compare")]
    NoPrompts,
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A text file to evaluate on: a regular UTF-8 file of at most [`TEXT_LIMIT`] bytes with
/// something in it other than whitespace.
pub fn read_text(path: &Path) -> Result<String, EvalError> {
    let text = input_file::read_regular_string(path, TEXT_LIMIT)
        .map_err(|source| EvalError::Read { path: path.to_path_buf(), source })?;
    if text.trim().is_empty() {
        return Err(EvalError::Empty { path: path.to_path_buf() });
    }
    Ok(text)
}

/// Prompts from a file: one per line, blank lines skipped, `\n` inside a line a newline.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, EvalError> {
    let text = read_text(path)?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.replace("\\n", "\n")).collect())
}
