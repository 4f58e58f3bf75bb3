//! The two-stage scheduler of TensorRT-LLM: the capacity scheduler decides which requests
//! run (admission under `capacity_scheduler_policy`, growth, preemption), the micro-batch
//! scheduler picks this step's tokens (priority requests first, then generation, then context
//! chunks within `max_num_tokens`). Also the scheduler's view of a request and its sequences.
//!
//! A priority request (a health probe) jumps the waiting queue and may run in a reserved
//! slot beyond `max_batch_size` ([`PRIORITY_SLOTS`]): the micro-batch still takes at most
//! `max_batch_size` sequences per step, priority first, so a user sequence sits out a step.

mod capacity;
mod micro_batch;
#[cfg(test)]
mod tests;

pub use micro_batch::{schedule_micro_batch, ScheduledChunk};

use super::kv_cache::{KvCacheManager, SeqId};
use std::collections::VecDeque;
use std::ops::Range;

/// Sequences of priority requests that may run beyond `max_batch_size`.
pub const PRIORITY_SLOTS: usize = 1;

/// Which requests may run (TensorRT-LLM's `CapacitySchedulerPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacitySchedulerPolicy {
    /// Admit whatever fits now; under KV pressure pause the most recently admitted request
    /// and later resume it by recomputation.
    #[default]
    MaxUtilization,
    /// Admit only requests whose worst case (prompt + max_tokens) fits beside the worst
    /// case of every running request.
    GuaranteedNoEvict,
    /// Admit a batch, then nothing new until all of it has finished.
    StaticBatch,
}

/// Scheduler limits (TensorRT-LLM's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub capacity_scheduler_policy: CapacitySchedulerPolicy,
    /// Most sequences in one step (at most the engine's).
    pub max_batch_size: usize,
    /// Most tokens in one step (at most the engine's; at least `max_batch_size`).
    pub max_num_tokens: usize,
    /// Split prompts longer than the step's remaining token budget across steps.
    pub enable_chunked_prefill: bool,
    /// Most logits rows one step returns (the engine's `max_batch_size`): a request scoring
    /// its prompt's tokens takes one row per scored position, so its prefill is chunked to fit.
    pub max_logits_rows: usize,
    /// Longest sequence (prompt + generated).
    pub max_seq_len: usize,
}

/// One sequence of a request: its tokens (prompt, then generated) and how many of them are
/// in the KV cache.
#[derive(Clone, Debug)]
pub struct SeqState {
    pub id: SeqId,
    /// Which of the request's `n` samples this is.
    pub index: usize,
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub num_computed: usize,
    pub finished: bool,
}

impl SeqState {
    /// Tokens still to feed (> 1 while in context phase, 1 when generating).
    pub fn to_compute(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// The scheduler's view of a request (TensorRT-LLM's `LlmRequest`).
#[derive(Clone, Debug)]
pub struct LlmRequest {
    pub id: u64,
    /// Samples wanted; the sequence forks into `n` once the prompt is computed.
    pub n: usize,
    pub max_tokens: usize,
    pub seqs: Vec<SeqState>,
    /// Whether the fork into `n` sequences has happened.
    pub forked: bool,
    /// How often this request was preempted.
    pub preemptions: u32,
    /// Jumps the queue and may take a reserved slot (see the module docs).
    pub priority: bool,
    /// The first prompt position whose logits are still wanted for the prompt's
    /// log-probabilities (the row at `p` scores token `p + 1`); None when none are (any more).
    pub prompt_logits_from: Option<usize>,
}

impl LlmRequest {
    /// A new request whose first sequence has id `seq_id`.
    pub fn new(id: u64, seq_id: SeqId, prompt: Vec<u32>, n: usize, max_tokens: usize) -> LlmRequest {
        let prompt_len = prompt.len();
        let seq = SeqState { id: seq_id, index: 0, tokens: prompt, prompt_len, num_computed: 0, finished: false };
        LlmRequest {
            id,
            n: n.max(1),
            max_tokens,
            seqs: vec![seq],
            forked: n <= 1,
            preemptions: 0,
            priority: false,
            prompt_logits_from: None,
        }
    }

    /// Asks for the logits of prompt positions `from - 1 ..`, which score the prompt's tokens
    /// from position `from` on (`from` >= 1; nothing when it is past the prompt's last token).
    pub fn score_prompt_from(mut self, from: usize) -> LlmRequest {
        let prompt_len = self.seqs.first().map_or(0, |s| s.prompt_len);
        self.prompt_logits_from = (from >= 1 && from < prompt_len).then(|| from - 1);
        self
    }

    /// Positions of `seq` whose logits the prompt's log-probabilities still want (the first
    /// sequence only: the prompt is scored before any fork).
    pub fn prompt_rows(&self, seq: &SeqState) -> Range<usize> {
        match self.prompt_logits_from {
            Some(from) if seq.index == 0 => from..seq.prompt_len.saturating_sub(1).max(from),
            _ => 0..0,
        }
    }

    /// Records that the rows of positions before `end` were scored.
    pub fn scored_prompt_until(&mut self, end: usize) {
        let prompt_len = self.seqs.first().map_or(0, |s| s.prompt_len);
        if let Some(from) = self.prompt_logits_from {
            let next = from.max(end);
            self.prompt_logits_from = (next + 1 < prompt_len).then_some(next);
        }
    }

    /// Most leading tokens admission may take from the prefix cache: none whose logits are
    /// still wanted.
    pub fn reuse_limit(&self) -> usize {
        self.prompt_logits_from.unwrap_or(usize::MAX)
    }

    pub fn live_seqs(&self) -> impl Iterator<Item = &SeqState> {
        self.seqs.iter().filter(|s| !s.finished)
    }

    /// Batch slots the request occupies (its forks included, before they exist).
    pub fn batch_slots(&self) -> usize {
        if self.forked {
            self.live_seqs().count()
        } else {
            self.n
        }
    }

    pub fn is_finished(&self) -> bool {
        self.seqs.iter().all(|s| s.finished)
    }
}

/// What one scheduling step did besides choosing chunks.
#[derive(Debug, Default)]
pub struct CapacityOutcome {
    /// Block copies (`request`, `src`, `dst`) the engine must make before the forward pass;
    /// `request` is the request whose write needs the copy (it fails if the copy does).
    pub copies: Vec<(u64, u32, u32)>,
    /// Requests preempted this step.
    pub preempted: Vec<u64>,
    /// Requests that can never run (removed), with the reason.
    pub failed: Vec<(u64, String)>,
    /// Requests admitted this step.
    pub admitted: Vec<u64>,
}

/// The waiting queue and running set, with the capacity policy that moves requests between.
#[derive(Debug)]
pub struct Scheduler {
    pub config: SchedulerConfig,
    pub waiting: VecDeque<LlmRequest>,
    /// Running requests in admission order (the last was admitted most recently).
    pub running: Vec<LlmRequest>,
    pub preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler { config, waiting: VecDeque::new(), running: Vec::new(), preemptions: 0 }
    }

    /// Queues a request: at the back, or a priority one ahead of every non-priority one.
    pub fn enqueue(&mut self, request: LlmRequest) {
        if request.priority {
            let at = self.waiting.iter().position(|r| !r.priority).unwrap_or(self.waiting.len());
            self.waiting.insert(at, request);
        } else {
            self.waiting.push_back(request);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn running_mut(&mut self, id: u64) -> Option<&mut LlmRequest> {
        self.running.iter_mut().find(|r| r.id == id)
    }

    /// Removes a request wherever it is, freeing its blocks.
    pub fn remove(&mut self, id: u64, kv: &mut KvCacheManager) -> Option<LlmRequest> {
        if let Some(i) = self.running.iter().position(|r| r.id == id) {
            let req = self.running.remove(i);
            for s in &req.seqs {
                kv.free_sequence(s.id);
            }
            return Some(req);
        }
        let i = self.waiting.iter().position(|r| r.id == id)?;
        self.waiting.remove(i)
    }

    /// Worst-case blocks of one sequence of `req`.
    fn worst_seq_blocks(&self, req: &LlmRequest, kv: &KvCacheManager) -> usize {
        let prompt = req.seqs.first().map(|s| s.prompt_len).unwrap_or(0);
        // `max_tokens` may be `usize::MAX` ("until max_seq_len"): saturate, never overflow.
        let len = prompt.saturating_add(req.max_tokens).min(self.config.max_seq_len);
        // A forked sample may copy its shared partial block once.
        kv.blocks_for(len) + usize::from(req.n > 1)
    }

    /// Blocks `req` may still take in its worst case beyond what it holds now.
    fn remaining_worst(&self, req: &LlmRequest, kv: &KvCacheManager) -> usize {
        let worst = self.worst_seq_blocks(req, kv);
        let held: usize = req.live_seqs().map(|s| worst.saturating_sub(kv.block_table(s.id).len())).sum();
        held + worst * req.n.saturating_sub(req.seqs.len())
    }
}
