//! Perplexity of a model over a text: the text is tokenized once, laid out in sliding windows
//! (`windows`), and each window goes through the executor as one request that asks for its
//! prompt's log-probabilities from the window's first new token on (the overlap with the previous
//! window is prefilled for context only, without logits). Only each scored token's own
//! log-probability comes back; the negative log-likelihoods are summed in f64.

use super::windows::{plan, Window};
use super::EvalError;
use crate::api::{Llm, OutputStream, Prompt};
use crate::sampling::{PromptLogprobs, SamplingParams};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::VecDeque;

/// Windows submitted to the executor at once: enough to fill its batch, few enough that the
/// queue and the scored positions waiting to be read stay small.
const MAX_IN_FLIGHT: usize = 64;

/// The default context length: the model's `max_position_embeddings`, at most 2048 (HF's guide
/// and common practice), and at most what the engine serves with the one token every request
/// generates.
pub fn default_context(llm: &Llm) -> usize {
    llm.config().max_position_embeddings.min(2048).min(llm.max_seq_len().saturating_sub(1))
}

/// What a perplexity run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// Tokens in the text (as the model tokenizes it, special tokens included).
    pub text_tokens: usize,
    pub context_len: usize,
    pub stride: usize,
    pub windows: usize,
    pub tokens_scored: usize,
    /// Sum of -log p(token | context) over the scored tokens (natural log).
    pub nll_sum: f64,
    pub mean_nll: f64,
    /// exp(mean_nll).
    pub perplexity: f64,
}

/// Perplexity of `llm` over the token ids `ids` with windows of `context` tokens every
/// `stride` tokens; `progress` shows a bar of windows on stderr.
pub fn perplexity(
    llm: &Llm,
    ids: &[u32],
    context: usize,
    stride: usize,
    progress: bool,
) -> Result<PerplexityReport, EvalError> {
    let windows = plan(ids.len(), context, stride)?;
    if context + 1 > llm.max_seq_len() {
        return Err(EvalError::ContextExceedsEngine { context, max_seq_len: llm.max_seq_len() });
    }
    let bar = if progress { ProgressBar::new(windows.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut pending: VecDeque<(Window, OutputStream)> = VecDeque::new();
    let mut next = windows.iter();
    let (mut nll_sum, mut tokens_scored) = (0f64, 0usize);
    loop {
        while pending.len() < MAX_IN_FLIGHT {
            let Some(&w) = next.next() else { break };
            let params = SamplingParams {
                max_tokens: 1,
                prompt_logprobs: Some(PromptLogprobs::from_position(w.first_scored_in_window())),
                ..SamplingParams::default()
            };
            let stream = llm.generate_stream(Prompt::Tokens(ids[w.begin..w.end].to_vec()), &params)?;
            pending.push_back((w, stream));
        }
        let Some((w, stream)) = pending.pop_front() else { break };
        let nll = window_nll(&w, ids, stream)?;
        nll_sum += nll;
        tokens_scored += w.scored();
        bar.inc(1);
        bar.set_message(format!("ppl {:.4}", (nll_sum / tokens_scored as f64).exp()));
    }
    bar.finish_and_clear();
    let mean_nll = nll_sum / tokens_scored as f64;
    Ok(PerplexityReport {
        text_tokens: ids.len(),
        context_len: context,
        stride,
        windows: windows.len(),
        tokens_scored,
        nll_sum,
        mean_nll,
        perplexity: mean_nll.exp(),
    })
}

/// The summed NLL of one window's scored tokens, checking the executor scored exactly those.
fn window_nll(w: &Window, ids: &[u32], stream: OutputStream) -> Result<f64, EvalError> {
    let out = stream.finish()?;
    let scored = out.prompt_logprobs.unwrap_or_default();
    let expected = w.first_scored_in_window()..w.end - w.begin;
    let positions_ok = scored.len() == expected.len()
        && scored.iter().zip(expected.clone()).all(|(s, p)| s.position == p && s.token_id == ids[w.begin + p]);
    if !positions_ok {
        return Err(EvalError::Internal(format!(
            "window {}..{} came back with {} scored positions, expected {} ({}..{})",
            w.begin,
            w.end,
            scored.len(),
            expected.len(),
            expected.start,
            expected.end
        )));
    }
    Ok(scored.iter().map(|s| -(s.logprob as f64)).sum())
}
