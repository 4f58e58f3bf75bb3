//! The client side of a request the executor loop holds: how each sample is sampled
//! (`SequenceSampler`s, or a beam search), how each one stops and what text it streams
//! (`StopChecker`s: eos, stop ids, stop strings over the detokenized text, lengths), and the
//! channel its updates go to.

use super::beam::BeamState;
use super::request::{OutputUpdate, Request};
use super::updates::UpdateSender;
use crate::sampling::{FinishReason, SampledToken, SamplingParams, SequenceSampler, StopChecker, StopUpdate};
use crate::tokenizer::Tokenizer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(super) struct Client {
    pub params: SamplingParams,
    /// One per sample: its random stream, penalty state and log-probabilities.
    pub samplers: Vec<SequenceSampler>,
    /// The beam search of a `use_beam_search` request (then `samplers` is empty).
    pub beam: Option<BeamState>,
    /// One per sample (per returned hypothesis for beam search, made when the search ends).
    stops: Vec<StopChecker>,
    eos: Vec<u32>,
    tokenizer: Option<Arc<Tokenizer>>,
    updates: UpdateSender,
    pub cancelled: Arc<AtomicBool>,
}

impl Client {
    /// The client of `request` (already validated by `submit`); an error names what failed.
    pub fn new(
        request: &Request,
        eos: &[u32],
        tokenizer: Option<Arc<Tokenizer>>,
        max_seq_len: usize,
        updates: UpdateSender,
        cancelled: Arc<AtomicBool>,
    ) -> Result<Client, String> {
        let params = &request.params;
        let (samplers, beam, stops) = if params.use_beam_search {
            let beam = BeamState::new(params, eos, request.n, request.prompt_ids.len(), max_seq_len)?;
            (Vec::new(), Some(beam), Vec::new())
        } else {
            let samplers = (0..request.n)
                .map(|i| SequenceSampler::for_output(params, &request.prompt_ids, eos, i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let stops = (0..request.n).map(|_| StopChecker::new(params, eos, tokenizer.clone())).collect();
            (samplers, None, stops)
        };
        Ok(Client { params: params.clone(), samplers, beam, stops, eos: eos.to_vec(), tokenizer, updates, cancelled })
    }

    /// Sends an update; a dropped handle counts as a cancellation.
    pub fn send(&self, update: OutputUpdate) {
        if self.updates.send(update).is_err() {
            self.cancelled.store(true, Ordering::Release);
        }
    }

    /// Sends the update of a token sampled for `sample` and returns whether the sample
    /// finished: its stop checker decides (`at_max_seq_len` ends it at the context limit).
    pub fn send_token(&mut self, sample: usize, sampled: SampledToken, at_max_seq_len: bool, step: u64) -> bool {
        let mut update = match self.stops.get_mut(sample) {
            Some(stop) => stop.step(sampled.id).unwrap_or_else(|e| {
                tracing::warn!("detokenizing token {}: {e}; the sample ends", sampled.id);
                stop.finish(FinishReason::Length)
            }),
            None => StopUpdate { text_diff: String::new(), finish_reason: Some(FinishReason::Length) },
        };
        if update.finish_reason.is_none() && at_max_seq_len {
            if let Some(stop) = self.stops.get_mut(sample) {
                let end = stop.finish(FinishReason::Length);
                update.text_diff.push_str(&end.text_diff);
                update.finish_reason = end.finish_reason;
            }
        }
        let finished = update.finish_reason.is_some();
        self.send(OutputUpdate {
            sample,
            token_ids: vec![sampled.id],
            text_diff: update.text_diff,
            logprobs: vec![sampled],
            finish_reason: update.finish_reason,
            error: None,
            step,
            cumulative_logprob: None,
            prompt_logprobs: Vec::new(),
        });
        finished
    }

    /// The final update of each of `samples` when the request is cancelled: the text the
    /// stop checker still held, and `Cancelled`.
    pub fn send_cancelled(&mut self, samples: impl Iterator<Item = usize>, step: u64) {
        for sample in samples {
            let text_diff =
                self.stops.get_mut(sample).map(|s| s.finish(FinishReason::Cancelled).text_diff).unwrap_or_default();
            let update = OutputUpdate {
                sample,
                token_ids: Vec::new(),
                text_diff,
                logprobs: Vec::new(),
                finish_reason: Some(FinishReason::Cancelled),
                error: None,
                step,
                cumulative_logprob: None,
                prompt_logprobs: Vec::new(),
            };
            let _ = self.updates.send(update);
        }
    }

    /// Sends the final updates of a beam search: each hypothesis runs through a stop checker
    /// for its text, cut after the token that completed a stop string (as a streamed sample
    /// would have stopped there); the checker's reason refines the search's.
    pub fn send_beam_results(&self, updates: Vec<OutputUpdate>) {
        for mut u in updates {
            if u.finish_reason != Some(FinishReason::Cancelled) {
                let mut stop = StopChecker::new(&self.params, &self.eos, self.tokenizer.clone());
                let mut text = String::new();
                let mut reason = None;
                let mut kept = 0;
                for &id in &u.token_ids {
                    kept += 1;
                    let step = stop.step(id).unwrap_or_else(|_| stop.finish(FinishReason::Length));
                    text.push_str(&step.text_diff);
                    if step.finish_reason.is_some() {
                        reason = step.finish_reason;
                        break;
                    }
                }
                if reason.is_none() {
                    let end = stop.finish(u.finish_reason.take().unwrap_or(FinishReason::Length));
                    text.push_str(&end.text_diff);
                    reason = end.finish_reason;
                }
                u.token_ids.truncate(kept);
                u.text_diff = text;
                u.finish_reason = reason;
            }
            self.send(u);
        }
    }
}
