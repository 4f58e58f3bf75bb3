//! The micro-batch scheduler: this step's tokens. Priority requests first, then generation
//! requests (one token each), then context requests in admission order with what is left of
//! `max_num_tokens`; with `enable_chunked_prefill` a prompt longer than the remainder is split
//! across steps.

use super::{LlmRequest, SchedulerConfig};
use crate::runtime::kv_cache::SeqId;

/// One sequence's tokens in this step: `tokens[start..start + len]` of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub request: u64,
    pub seq: SeqId,
    pub start: usize,
    pub len: usize,
    /// The chunk ends at the sequence's last token: its logits give the next token.
    pub want_logits: bool,
}

/// Picks this step's chunks from the running requests.
pub fn schedule_micro_batch(config: &SchedulerConfig, running: &[LlmRequest]) -> Vec<ScheduledChunk> {
    let mut chunks = Vec::new();
    let mut budget = config.max_num_tokens;
    // Priority requests (health probes) come first in every pass.
    let ordered = || running.iter().filter(|r| r.priority).chain(running.iter().filter(|r| !r.priority));
    let live = || ordered().flat_map(|r| r.live_seqs().map(move |s| (r.id, s)));
    for (request, s) in live().filter(|(_, s)| s.to_compute() == 1) {
        if chunks.len() == config.max_batch_size || budget == 0 {
            return chunks;
        }
        chunks.push(ScheduledChunk { request, seq: s.id, start: s.num_computed, len: 1, want_logits: true });
        budget -= 1;
    }
    for (request, s) in live().filter(|(_, s)| s.to_compute() > 1) {
        if chunks.len() == config.max_batch_size || budget == 0 {
            break;
        }
        let want = s.to_compute();
        // A context that can never fit one step is chunked even when chunking is off.
        let may_chunk = config.enable_chunked_prefill || want > config.max_num_tokens;
        let len = want.min(budget);
        if len < want && !may_chunk {
            break;
        }
        chunks.push(ScheduledChunk { request, seq: s.id, start: s.num_computed, len, want_logits: len == want });
        budget -= len;
    }
    chunks
}
