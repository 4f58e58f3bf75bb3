//! Log-probabilities of prompt tokens (vLLM's `prompt_logprobs`): what a request asks for
//! ([`PromptLogprobs`]: how many alternatives, from which position, whether the whole
//! distribution) and what one scored prompt position gives back ([`PromptLogprob`]), computed
//! from one row of raw logits ([`score_row`]). The executor scores each row as it comes back and
//! keeps none of them: only what the request asked for leaves the loop.

use super::params::{SamplingError, MAX_LOGPROBS};
use super::processors::{self, Candidate};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a request wants to know about its prompt's tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptLogprobs {
    /// The most likely tokens returned per scored position besides the prompt token itself
    /// (vLLM's `prompt_logprobs = k`; at most [`MAX_LOGPROBS`]).
    pub top: usize,
    /// The first prompt position scored (>= 1: position 0 has no context). Earlier positions
    /// are prefilled without logits (and may come from the prefix cache): a sliding-window
    /// evaluation scores only the tokens an earlier window did not.
    pub start: usize,
    /// Also return each scored position's whole distribution (the log-softmax row,
    /// `vocab_size` floats): what a divergence between two models (KL) needs. Meant for short
    /// ranges of positions; the rows are shared, not copied, as outputs stream.
    pub full_distribution: bool,
}

impl Default for PromptLogprobs {
    fn default() -> Self {
        PromptLogprobs { top: 0, start: 1, full_distribution: false }
    }
}

impl PromptLogprobs {
    /// vLLM's `prompt_logprobs = k`: every position from 1, with the `k` most likely tokens.
    pub fn top(k: usize) -> Self {
        PromptLogprobs { top: k, ..Default::default() }
    }

    /// Only the prompt tokens' own log-probabilities, from position `start` on.
    pub fn from_position(start: usize) -> Self {
        PromptLogprobs { start, ..Default::default() }
    }

    /// Checks the fields; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |field, value: usize, allowed: &str| SamplingError {
            field,
            value: value.to_string(),
            allowed: allowed.to_string(),
        };
        if self.top > MAX_LOGPROBS {
            return Err(bad("prompt_logprobs.top", self.top, &format!("<= {MAX_LOGPROBS}")));
        }
        if self.start == 0 {
            return Err(bad("prompt_logprobs.start", 0, ">= 1 (the first token has no context to be scored in)"));
        }
        Ok(())
    }
}

/// One scored prompt position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptLogprob {
    /// The position of the token in the prompt (>= 1).
    pub position: usize,
    pub token_id: u32,
    /// Its log-probability given the tokens before it (raw logits, as vLLM reports them).
    pub logprob: f32,
    /// 1 + how many tokens the model found more likely (vLLM's rank).
    pub rank: usize,
    /// The `top` most likely tokens there, most likely first (ties by lower id).
    pub top_logprobs: Vec<(u32, f32)>,
    /// The whole log-softmax row, when `full_distribution` was asked.
    #[serde(skip)]
    pub distribution: Option<Arc<[f32]>>,
}

/// Scores `token` (the prompt token at `position`) against `logits`, the raw row the model
/// computed at `position - 1`. `scratch` is reused between calls.
pub fn score_row(
    logits: &[f32],
    position: usize,
    token: u32,
    spec: &PromptLogprobs,
    scratch: &mut Vec<Candidate>,
) -> PromptLogprob {
    let lse = processors::log_sum_exp(logits);
    let logprob_of = |v: f32| if v.is_finite() { (v as f64 - lse) as f32 } else { f32::NEG_INFINITY };
    let own = logits.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
    let above = logits.iter().filter(|&&v| v > own).count();
    let top_logprobs = if spec.top > 0 {
        processors::top_n(logits, spec.top, scratch).into_iter().map(|(id, v)| (id, logprob_of(v))).collect()
    } else {
        Vec::new()
    };
    let distribution = spec.full_distribution.then(|| logits.iter().map(|&v| logprob_of(v)).collect());
    PromptLogprob { position, token_id: token, logprob: logprob_of(own), rank: above + 1, top_logprobs, distribution }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_a_row_like_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let lse = (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln();
        let spec = PromptLogprobs { top: 2, start: 1, full_distribution: true };
        let s = score_row(&logits, 5, 2, &spec, &mut Vec::new());
        assert_eq!((s.position, s.token_id, s.rank), (5, 2, 3));
        assert!((s.logprob as f64 - (2.0 - lse)).abs() < 1e-6);
        // Ties by lower id.
        assert_eq!(s.top_logprobs.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
        let dist = s.distribution.expect("asked for");
        let total: f64 = dist.iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert_eq!(dist[2], s.logprob);
        let plain = score_row(&logits, 1, 1, &PromptLogprobs::default(), &mut Vec::new());
        assert_eq!(plain.rank, 1);
        assert!(plain.top_logprobs.is_empty() && plain.distribution.is_none());
    }

    #[test]
    fn validation_names_the_field() {
        assert!(PromptLogprobs::top(20).validate().is_ok());
        assert_eq!(PromptLogprobs::top(21).validate().unwrap_err().field, "prompt_logprobs.top");
        assert_eq!(PromptLogprobs::from_position(0).validate().unwrap_err().field, "prompt_logprobs.start");
    }
}
