//! The micro-batch scheduler: this step's tokens. Priority requests first, then generation
//! requests (one token each), then context requests in admission order with what is left of
//! `max_num_tokens`; with `enable_chunked_prefill` a prompt longer than the remainder is split
//! across steps. Logits rows are counted against `max_logits_rows`: one per chunk that ends a
//! sequence, plus one per scored position of a request that wants its prompt's log-probabilities
//! (whose prefill is chunked, chunking on or off, to the rows left).

use super::{LlmRequest, SchedulerConfig};
use crate::runtime::kv_cache::SeqId;
use std::ops::Range;

/// One sequence's tokens in this step: `tokens[start..start + len]` of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub request: u64,
    pub seq: SeqId,
    pub start: usize,
    pub len: usize,
    /// The chunk ends at the sequence's last token: its logits give the next token.
    pub want_logits: bool,
    /// Positions of this chunk whose logits score the prompt's next token (empty unless the
    /// request wants its prompt's log-probabilities); their rows come before the last one's.
    pub prompt_rows: Range<usize>,
}

impl ScheduledChunk {
    /// Logits rows the chunk takes.
    pub fn rows(&self) -> usize {
        self.prompt_rows.len() + usize::from(self.want_logits)
    }
}

/// Picks this step's chunks from the running requests.
pub fn schedule_micro_batch(config: &SchedulerConfig, running: &[LlmRequest]) -> Vec<ScheduledChunk> {
    let mut chunks = Vec::new();
    let mut budget = config.max_num_tokens;
    let mut rows_left = config.max_logits_rows;
    // Priority requests (health probes) come first in every pass.
    let ordered = || running.iter().filter(|r| r.priority).chain(running.iter().filter(|r| !r.priority));
    let live = || ordered().flat_map(|r| r.live_seqs().map(move |s| (r, s)));
    for (r, s) in live().filter(|(_, s)| s.to_compute() == 1) {
        if chunks.len() == config.max_batch_size || budget == 0 || rows_left == 0 {
            return chunks;
        }
        let (start, len) = (s.num_computed, 1);
        chunks.push(ScheduledChunk { request: r.id, seq: s.id, start, len, want_logits: true, prompt_rows: 0..0 });
        budget -= 1;
        rows_left -= 1;
    }
    for (r, s) in live().filter(|(_, s)| s.to_compute() > 1) {
        if chunks.len() == config.max_batch_size || budget == 0 {
            break;
        }
        let want = s.to_compute();
        let start = s.num_computed;
        let scored = r.prompt_rows(s);
        // A context that can never fit one step is chunked even when chunking is off, and so is
        // one whose scored positions need more rows than a step has.
        let may_chunk = config.enable_chunked_prefill || want > config.max_num_tokens || !scored.is_empty();
        let mut len = want.min(budget);
        if !scored.is_empty() {
            // Positions before the scored ones cost no row; each scored one costs one.
            len = len.min(scored.start.saturating_sub(start) + rows_left);
        }
        let rows_of = |len: usize| overlap(start..start + len, &scored) + usize::from(len == want);
        if rows_of(len) > rows_left && may_chunk {
            // Stop one short of the end: the last token's row waits for a step with room.
            len -= 1;
        }
        if len == 0 || (len < want && !may_chunk) || rows_of(len) > rows_left {
            break;
        }
        let prompt_rows = start.max(scored.start).min(start + len)..(start + len).min(scored.end.max(start));
        let chunk = ScheduledChunk { request: r.id, seq: s.id, start, len, want_logits: len == want, prompt_rows };
        rows_left -= chunk.rows();
        budget -= len;
        chunks.push(chunk);
    }
    chunks
}

/// How many positions of `a` are in `b`.
fn overlap(a: Range<usize>, b: &Range<usize>) -> usize {
    a.end.min(b.end).saturating_sub(a.start.max(b.start))
}
