//! Turns one request's executor updates into `RequestOutput`s. The executor has already
//! decided everything (tokens, text with stop strings trimmed, finish reasons, see
//! `runtime::executor`); this only accumulates each sample's tokens, text and
//! log-probabilities, and picks the best `n` of `best_of` once all are done.

use super::output::{CompletionOutput, RequestOutput, TokenLogprob};
use crate::runtime::executor::OutputUpdate;
use crate::sampling::{FinishReason, PromptLogprob, SamplingParams};

/// The state of one request seen by the API.
pub(crate) struct RequestTracker {
    request_id: u64,
    prompt: Option<String>,
    prompt_token_ids: Vec<u32>,
    prompt_logprobs: Option<Vec<PromptLogprob>>,
    /// Outputs returned once finished (`n` of the `best_of` samples).
    n: usize,
    samples: Vec<CompletionOutput>,
}

impl RequestTracker {
    pub fn new(
        request_id: u64,
        prompt: Option<String>,
        prompt_token_ids: Vec<u32>,
        params: &SamplingParams,
        samples: usize,
    ) -> RequestTracker {
        let samples = (0..samples)
            .map(|index| CompletionOutput {
                index,
                text: String::new(),
                token_ids: Vec::new(),
                text_diff: String::new(),
                token_ids_diff: Vec::new(),
                cumulative_logprob: 0.0,
                logprobs: params.logprobs.map(|_| Vec::new()),
                finish_reason: None,
            })
            .collect();
        let prompt_logprobs = params.prompt_logprobs.as_ref().map(|_| Vec::new());
        RequestTracker { request_id, prompt, prompt_token_ids, prompt_logprobs, n: params.n, samples }
    }

    /// Applies one executor update; returns whether some sample got new text, tokens or a
    /// finish reason.
    pub fn apply(&mut self, mut update: OutputUpdate) -> bool {
        let scored = !update.prompt_logprobs.is_empty();
        if let Some(list) = self.prompt_logprobs.as_mut() {
            list.append(&mut update.prompt_logprobs);
        }
        let Some(s) = self.samples.get_mut(update.sample) else {
            return scored;
        };
        let changed =
            scored || !update.token_ids.is_empty() || !update.text_diff.is_empty() || update.finish_reason.is_some();
        for (i, &id) in update.token_ids.iter().enumerate() {
            s.token_ids.push(id);
            s.token_ids_diff.push(id);
            if let Some(lp) = update.logprobs.get(i) {
                s.cumulative_logprob += lp.logprob as f64;
                if let Some(list) = s.logprobs.as_mut() {
                    list.push(TokenLogprob {
                        token_id: id,
                        logprob: lp.logprob,
                        top_logprobs: lp.top_logprobs.clone(),
                    });
                }
            }
        }
        s.text.push_str(&update.text_diff);
        s.text_diff.push_str(&update.text_diff);
        if let Some(cum) = update.cumulative_logprob {
            s.cumulative_logprob = cum;
        }
        if s.finish_reason.is_none() {
            s.finish_reason = update.finish_reason;
        }
        changed
    }

    /// Ends every unfinished sample (the executor closed the stream, e.g. on shutdown).
    pub fn close(&mut self) {
        for s in &mut self.samples {
            s.finish_reason.get_or_insert(FinishReason::Cancelled);
        }
    }

    pub fn all_finished(&self) -> bool {
        self.samples.iter().all(|s| s.finish_reason.is_some())
    }

    /// The current output; takes (clears) the diffs. Once finished with `best_of > n`, only
    /// the `n` samples with the highest cumulative log-probability are returned, re-indexed.
    pub fn snapshot(&mut self) -> RequestOutput {
        let finished = self.all_finished();
        let mut outputs: Vec<CompletionOutput> = self
            .samples
            .iter_mut()
            .map(|s| {
                let out = s.clone();
                s.text_diff.clear();
                s.token_ids_diff.clear();
                out
            })
            .collect();
        if finished && outputs.len() > self.n {
            outputs.sort_by(|a, b| b.cumulative_logprob.total_cmp(&a.cumulative_logprob).then(a.index.cmp(&b.index)));
            outputs.truncate(self.n);
            for (i, o) in outputs.iter_mut().enumerate() {
                o.index = i;
            }
        }
        RequestOutput {
            request_id: self.request_id,
            prompt: self.prompt.clone(),
            prompt_token_ids: self.prompt_token_ids.clone(),
            prompt_logprobs: self.prompt_logprobs.clone(),
            outputs,
            finished,
        }
    }
}
