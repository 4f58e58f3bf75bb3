//! Beam search in the executor: the per-request [`BeamState`] that gathers one logits row per
//! live beam (a beam's sequence is `LlmRequest::seqs[i]` for beam `i`), applies the beam's
//! penalties, runs one [`BeamSearch::step`] once every beam has its row, and re-maps the
//! request's sequences to the new beams — the first child of a parent reuses the parent's
//! sequence, further children fork it in the KV cache (full blocks shared, the partial block
//! copied on first write), parents without children are freed. When the search ends it frees
//! every beam and yields one final [`OutputUpdate`] per returned hypothesis (its text and the
//! exact stop reason are the client's stop checker's to add).
//!
//! Processing per beam: repetition, presence and frequency penalties over the beam's own tokens
//! and the `min_tokens` mask apply before the log-softmax (so the hypotheses' log-probabilities
//! are those of the processed distribution, as in Hugging Face's beam search); temperature,
//! top-k, top-p and min-p do not apply to beam search. Per-token `logprobs` are not reported for
//! beam outputs (only each hypothesis's `cumulative_logprob`).

use super::request::OutputUpdate;
use crate::runtime::kv_cache::{KvCacheManager, SeqId};
use crate::runtime::scheduler::{LlmRequest, SeqState};
use crate::sampling::processors::{
    apply_presence_frequency_penalties, apply_repetition_penalty, log_softmax_in_place, mask_tokens,
};
use crate::sampling::{BeamChild, BeamConfig, BeamSearch, SamplingParams};
use crate::sampling::{FinishReason, StopKind};
use std::collections::HashMap;

/// What feeding one beam's logits did.
pub(super) enum BeamProgress {
    /// Other beams of the request still wait for their logits.
    Waiting,
    /// A step was taken: `tokens` new tokens (one per new beam), the beams re-mapped.
    Stepped { tokens: usize },
    /// The search ended: every beam is freed and finished; send these updates.
    Done { tokens: usize, updates: Vec<OutputUpdate> },
}

/// The beam search of one request.
pub(super) struct BeamState {
    /// None once finalized.
    search: Option<BeamSearch>,
    params: SamplingParams,
    /// Ids that finish a beam (eos unless ignored, and stop ids); the `min_tokens` mask.
    eos_ids: Vec<u32>,
    /// Hypotheses returned (the request's `n`).
    n: usize,
    /// One log-probability row per beam (`ready[i]` once beam i's row arrived this step).
    rows: Vec<Vec<f32>>,
    ready: Vec<bool>,
}

impl BeamState {
    /// A search for `params` over a prompt of `prompt_len` tokens: at most `max_tokens`
    /// generated and never past `max_seq_len`; returns the best `n` hypotheses.
    pub fn new(
        params: &SamplingParams,
        eos: &[u32],
        n: usize,
        prompt_len: usize,
        max_seq_len: usize,
    ) -> Result<BeamState, String> {
        let mut config = BeamConfig::from_params(params, eos);
        config.max_tokens = config.max_tokens.min(max_seq_len.saturating_sub(prompt_len));
        let eos_ids = config.eos_ids.clone();
        let search = BeamSearch::new(config).map_err(|e| e.to_string())?;
        Ok(BeamState {
            search: Some(search),
            params: params.clone(),
            eos_ids,
            n,
            rows: vec![Vec::new()],
            ready: vec![false],
        })
    }

    /// Hypotheses this request returns (its sample indices are `0..n`).
    pub fn num_outputs(&self) -> usize {
        self.n
    }

    /// Beam `pos` (`req.seqs[pos]`) produced `logits`. Once every live beam has its row, takes
    /// one search step and re-maps `req.seqs` (new sequence ids come from `next_seq`).
    pub fn on_logits(
        &mut self,
        req: &mut LlmRequest,
        pos: usize,
        logits: &[f32],
        kv: &mut KvCacheManager,
        next_seq: &mut SeqId,
        step: u64,
    ) -> Result<BeamProgress, String> {
        let Some(search) = self.search.as_mut().filter(|s| !s.is_done()) else {
            return Ok(BeamProgress::Waiting);
        };
        let beams = req.seqs.len();
        if self.rows.len() != beams || pos >= beams {
            return Err(format!("beam search holds {} rows for {beams} sequences (got beam {pos})", self.rows.len()));
        }
        let row = &mut self.rows[pos];
        row.clear();
        row.extend_from_slice(logits);
        process(row, &req.seqs[pos], &self.params, &self.eos_ids);
        log_softmax_in_place(row);
        self.ready[pos] = true;
        if !self.ready.iter().all(|&r| r) {
            return Ok(BeamProgress::Waiting);
        }
        let refs: Vec<&[f32]> = self.rows.iter().map(|r| r.as_slice()).collect();
        let children = search.step(&refs).map_err(|e| e.to_string())?;
        if search.is_done() {
            return Ok(self.finish(req, kv, step));
        }
        remap(req, &children, kv, next_seq)?;
        req.forked = true;
        self.rows.resize_with(children.len(), Vec::new);
        self.ready.clear();
        self.ready.resize(children.len(), false);
        Ok(BeamProgress::Stepped { tokens: children.len() })
    }

    /// Frees every beam, marks the request finished and builds the final updates: the best
    /// `n` hypotheses as samples `0..n` (an empty `Length` update for a missing rank).
    fn finish(&mut self, req: &mut LlmRequest, kv: &mut KvCacheManager, step: u64) -> BeamProgress {
        // The step that ended the search chose one more token for each hypothesis.
        let tokens = req.seqs.len();
        for s in &mut req.seqs {
            kv.free_sequence(s.id);
            s.finished = true;
        }
        let hyps = self.search.take().map(BeamSearch::finalize).unwrap_or_default();
        let updates = (0..self.n)
            .map(|rank| {
                let (token_ids, cum, finish) = match hyps.get(rank) {
                    Some(h) => {
                        let stop = h.tokens.last().filter(|t| self.eos_ids.contains(t));
                        let reason = stop.map_or(FinishReason::Length, |&t| FinishReason::Stop(StopKind::Eos(t)));
                        (h.tokens.clone(), Some(h.cum_logprob), reason)
                    }
                    None => (Vec::new(), None, FinishReason::Length),
                };
                OutputUpdate {
                    sample: rank,
                    token_ids,
                    text_diff: String::new(),
                    logprobs: Vec::new(),
                    finish_reason: Some(finish),
                    error: None,
                    step,
                    cumulative_logprob: cum,
                    prompt_logprobs: Vec::new(),
                }
            })
            .collect();
        BeamProgress::Done { tokens, updates }
    }
}

/// The beam's penalties over its own tokens and the `min_tokens` mask.
fn process(row: &mut [f32], seq: &SeqState, params: &SamplingParams, eos_ids: &[u32]) {
    let generated = &seq.tokens[seq.prompt_len.min(seq.tokens.len())..];
    if params.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = seq.tokens.clone();
        seen.sort_unstable();
        seen.dedup();
        apply_repetition_penalty(row, &seen, params.repetition_penalty);
    }
    if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in generated {
            *counts.entry(t).or_default() += 1;
        }
        let counts: Vec<(u32, u32)> = counts.into_iter().collect();
        apply_presence_frequency_penalties(row, &counts, params.presence_penalty, params.frequency_penalty);
    }
    if generated.len() < params.min_tokens {
        mask_tokens(row, eos_ids);
    }
}

/// Re-maps `req.seqs` (one per old beam) to the new beams `children`: the first child of a
/// parent takes the parent's sequence, later children fork it (before it appends), parents
/// without children are freed. Every new beam then appends its token.
fn remap(
    req: &mut LlmRequest,
    children: &[BeamChild],
    kv: &mut KvCacheManager,
    next_seq: &mut SeqId,
) -> Result<(), String> {
    let mut old: Vec<Option<SeqState>> = std::mem::take(&mut req.seqs).into_iter().map(Some).collect();
    if let Some(c) = children.iter().find(|c| c.parent >= old.len()) {
        return Err(format!("beam child names parent {} of {} beams", c.parent, old.len()));
    }
    // Forks first, while every parent's sequence is still untouched.
    let mut forked: Vec<Option<SeqState>> = vec![None; children.len()];
    let mut taken = vec![false; old.len()];
    let mut first_child = vec![usize::MAX; old.len()];
    for (i, c) in children.iter().enumerate() {
        if taken[c.parent] {
            let Some(parent) = old[c.parent].as_ref() else { continue };
            let child = SeqState { id: *next_seq, ..parent.clone() };
            *next_seq += 1;
            if let Err(e) = kv.fork(parent.id, child.id) {
                free_all(kv, old.iter().chain(&forked).flatten().map(|s| s.id));
                return Err(format!("beam fork: {e}"));
            }
            forked[i] = Some(child);
        } else {
            taken[c.parent] = true;
            first_child[c.parent] = i;
        }
    }
    for (p, slot) in old.iter_mut().enumerate() {
        if !taken[p] {
            if let Some(s) = slot.take() {
                kv.free_sequence(s.id);
            }
        }
    }
    let mut seqs = Vec::with_capacity(children.len());
    for (i, c) in children.iter().enumerate() {
        let seq = if first_child[c.parent] == i { old[c.parent].take() } else { forked[i].take() };
        let Some(mut seq) = seq else {
            free_all(kv, old.iter().chain(&forked).flatten().map(|s| s.id));
            free_all(kv, seqs.iter().map(|s: &SeqState| s.id));
            return Err(format!("beam {i} lost its sequence (parent {})", c.parent));
        };
        seq.index = i;
        seq.tokens.push(c.token);
        seqs.push(seq);
    }
    req.seqs = seqs;
    Ok(())
}

/// Frees the KV blocks of every sequence given (the request fails with no sequences left).
fn free_all(kv: &mut KvCacheManager, ids: impl Iterator<Item = SeqId>) {
    for id in ids {
        kv.free_sequence(id);
    }
}
