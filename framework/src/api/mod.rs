//! The Rust `Llm` API: load a model, then `generate` (all prompts batched through one
//! executor), `generate_stream` (outputs with `text_diff` as tokens come), `generate_async`
//! and an async stream on tokio, chat through the model's template, and `shutdown`.

mod llm;
mod output;
mod prompt;
mod stream;
mod tracker;

pub use llm::{Llm, LlmBuilder, LlmError};
pub use output::{CompletionOutput, RequestOutput, TokenLogprob};
pub use prompt::Prompt;
pub use stream::{OutputStream, OutputStreamAsync};
