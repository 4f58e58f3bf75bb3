//! Turns one request's executor updates (token ids per sample) into `RequestOutput`s: the
//! incremental detokenization, stop strings, finish reasons and log-probabilities of each
//! sample, and the best `n` of `best_of` once all are done.

use super::output::{CompletionOutput, RequestOutput, TokenLogprob};
use crate::runtime::{executor::OutputUpdate, FinishReason as ExecutorFinish};
use crate::sampling::stop::{FinishReason, StopChecker, StopKind};
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;

struct SampleState {
    checker: StopChecker,
    output: CompletionOutput,
}

/// The state of one request seen by the API.
pub(crate) struct RequestTracker {
    request_id: u64,
    prompt: Option<String>,
    prompt_token_ids: Vec<u32>,
    params: SamplingParams,
    samples: Vec<SampleState>,
}

/// What applying an update did.
pub(crate) struct Applied {
    /// Some sample got new text, tokens or a finish reason.
    pub changed: bool,
    /// Every sample has finished (the request can be cancelled if the executor still runs it).
    pub all_finished: bool,
}

impl RequestTracker {
    pub fn new(
        request_id: u64,
        prompt: Option<String>,
        prompt_token_ids: Vec<u32>,
        params: &SamplingParams,
        samples: usize,
        eos_ids: &[u32],
        tokenizer: &Tokenizer,
    ) -> RequestTracker {
        let samples = (0..samples)
            .map(|index| SampleState {
                checker: StopChecker::new(params, eos_ids, tokenizer),
                output: CompletionOutput {
                    index,
                    text: String::new(),
                    token_ids: Vec::new(),
                    text_diff: String::new(),
                    token_ids_diff: Vec::new(),
                    cumulative_logprob: 0.0,
                    logprobs: params.logprobs.map(|_| Vec::new()),
                    finish_reason: None,
                },
            })
            .collect();
        RequestTracker { request_id, prompt, prompt_token_ids, params: params.clone(), samples }
    }

    /// Applies one executor update. Tokens after a sample finished (the executor runs one
    /// step behind a stop string) are dropped.
    pub fn apply(&mut self, tokenizer: &Tokenizer, update: &OutputUpdate) -> Applied {
        let mut changed = false;
        if let Some(s) = self.samples.get_mut(update.sample) {
            for (i, &id) in update.token_ids.iter().enumerate() {
                if s.output.finish_reason.is_some() {
                    break;
                }
                s.output.token_ids.push(id);
                s.output.token_ids_diff.push(id);
                if let Some(lp) = update.logprobs.get(i) {
                    s.output.cumulative_logprob += lp.logprob as f64;
                    if let Some(list) = s.output.logprobs.as_mut() {
                        list.push(TokenLogprob {
                            token_id: id,
                            logprob: lp.logprob,
                            top_logprobs: lp.top_logprobs.clone(),
                        });
                    }
                }
                match s.checker.step(tokenizer, id) {
                    Ok(step) => {
                        s.output.text_diff.push_str(&step.text_diff);
                        s.output.finish_reason = step.finish_reason;
                    }
                    Err(e) => {
                        tracing::warn!("request {}: detokenizing token {id}: {e}", self.request_id);
                        s.output.finish_reason = Some(FinishReason::Length);
                    }
                }
                changed = true;
            }
            if let Some(cum) = update.cumulative_logprob {
                s.output.cumulative_logprob = cum;
            }
            if s.output.finish_reason.is_none() {
                if let Some(reason) = update.finish_reason {
                    let tail = s.checker.flush(tokenizer);
                    s.output.text_diff.push_str(&tail);
                    s.output.finish_reason = Some(match reason {
                        ExecutorFinish::Length | ExecutorFinish::Cancelled => FinishReason::Length,
                        ExecutorFinish::Stop => {
                            let last = s.output.token_ids.last().copied().unwrap_or(0);
                            FinishReason::Stop(StopKind::StopTokenId(last))
                        }
                    });
                    changed = true;
                }
            }
            s.output.text = s.checker.text().to_string();
        }
        Applied { changed, all_finished: self.samples.iter().all(|s| s.output.finish_reason.is_some()) }
    }

    /// Ends every unfinished sample (the executor closed the stream, e.g. on shutdown).
    pub fn close(&mut self, tokenizer: &Tokenizer) {
        for s in &mut self.samples {
            if s.output.finish_reason.is_none() {
                let tail = s.checker.flush(tokenizer);
                s.output.text_diff.push_str(&tail);
                s.output.text = s.checker.text().to_string();
                s.output.finish_reason = Some(FinishReason::Length);
            }
        }
    }

    pub fn all_finished(&self) -> bool {
        self.samples.iter().all(|s| s.output.finish_reason.is_some())
    }

    /// The current output; takes (clears) the diffs. Once finished with `best_of > n`, only
    /// the `n` samples with the highest cumulative log-probability are returned, re-indexed.
    pub fn snapshot(&mut self) -> RequestOutput {
        let finished = self.all_finished();
        let mut outputs: Vec<CompletionOutput> = self
            .samples
            .iter_mut()
            .map(|s| {
                let out = s.output.clone();
                s.output.text_diff.clear();
                s.output.token_ids_diff.clear();
                out
            })
            .collect();
        if finished && outputs.len() > self.params.n {
            outputs.sort_by(|a, b| b.cumulative_logprob.total_cmp(&a.cumulative_logprob).then(a.index.cmp(&b.index)));
            outputs.truncate(self.params.n);
            for (i, o) in outputs.iter_mut().enumerate() {
                o.index = i;
            }
        }
        RequestOutput {
            request_id: self.request_id,
            prompt: self.prompt.clone(),
            prompt_token_ids: self.prompt_token_ids.clone(),
            outputs,
            finished,
        }
    }
}
