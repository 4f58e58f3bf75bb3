//! What generation returns: one `RequestOutput` per prompt with one `CompletionOutput` per
//! sample (text, token ids, finish reason, log-probabilities), the prompt's scored positions when
//! asked, and the `text_diff` of a stream.

use crate::sampling::{FinishReason, PromptLogprob};
use serde::Serialize;

/// A generated token's log-probability and the top alternatives (when `logprobs` was asked).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token_id: u32,
    pub logprob: f32,
    pub top_logprobs: Vec<(u32, f32)>,
}

/// One sample of a request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionOutput {
    /// Which sample (0..n).
    pub index: usize,
    /// The text so far (stop strings trimmed).
    pub text: String,
    /// Generated token ids so far.
    pub token_ids: Vec<u32>,
    /// Text added since the previous output of this stream.
    pub text_diff: String,
    /// Token ids added since the previous output of this stream.
    pub token_ids_diff: Vec<u32>,
    /// Sum of the generated tokens' log-probabilities.
    pub cumulative_logprob: f64,
    /// Per-token log-probabilities, when `SamplingParams::logprobs` is set.
    pub logprobs: Option<Vec<TokenLogprob>>,
    pub finish_reason: Option<FinishReason>,
}

impl CompletionOutput {
    pub fn is_finished(&self) -> bool {
        self.finish_reason.is_some()
    }
}

/// Everything generated for one prompt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestOutput {
    pub request_id: u64,
    /// The prompt text, when it was given as text.
    pub prompt: Option<String>,
    pub prompt_token_ids: Vec<u32>,
    /// The prompt's scored positions so far, in order (when `SamplingParams::prompt_logprobs`
    /// is set; vLLM's `prompt_logprobs`, which has `None` for position 0 where this starts at
    /// the first scored position).
    pub prompt_logprobs: Option<Vec<PromptLogprob>>,
    pub outputs: Vec<CompletionOutput>,
    /// Every sample has finished.
    pub finished: bool,
}
