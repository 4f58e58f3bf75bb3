//! Runs one sequence through an engine: chunked prefill, then decode steps, growing its block
//! table as it goes. The batched, scheduled executor builds on the same engine calls.

use super::blocks::{BlockPool, KvCacheFull};
use crate::engine::{EngineError, StepBatch};
use crate::parallel::ModelRunner;
use crate::sampling::{Sampler, SamplingParams};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    KvCacheFull(#[from] KvCacheFull),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("sequence of {len} tokens exceeds max_seq_len {max}")]
    TooLong { len: usize, max: usize },
}

/// One sequence's state: its tokens so far and its blocks.
pub struct SequenceRunner<'a> {
    engine: &'a mut dyn ModelRunner,
    pool: &'a mut BlockPool,
    blocks: Vec<u32>,
    len: usize,
    batch: StepBatch,
}

impl<'a> SequenceRunner<'a> {
    pub fn new(engine: &'a mut dyn ModelRunner, pool: &'a mut BlockPool) -> Self {
        SequenceRunner { engine, pool, blocks: Vec::new(), len: 0, batch: StepBatch::default() }
    }

    /// Tokens in the cache so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn ensure_blocks(&mut self, len: usize) -> Result<(), RuntimeError> {
        let lim = self.engine.limits();
        if len > lim.max_seq_len {
            return Err(RuntimeError::TooLong { len, max: lim.max_seq_len });
        }
        let need = len.div_ceil(lim.tokens_per_block);
        if need > self.blocks.len() {
            let more = self.pool.allocate(need - self.blocks.len())?;
            self.blocks.extend(more);
        }
        Ok(())
    }

    /// Feeds `tokens` (in chunks of at most max_num_tokens) and returns the logits after the
    /// last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        self.ensure_blocks(self.len + tokens.len())?;
        let chunk = self.engine.limits().max_num_tokens;
        let mut logits = Vec::new();
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let last = (i + 1) * chunk >= tokens.len();
            self.batch.clear();
            self.batch.push_sequence(part, self.len, &self.blocks, last);
            if !last {
                // A chunk still needs one logits row for the graph; it is discarded.
                self.batch.logits_indices.push(0);
            }
            let out = self.engine.forward(&self.batch)?;
            if last {
                logits = out.to_vec();
            }
            self.len += part.len();
        }
        Ok(logits)
    }
}

impl Drop for SequenceRunner<'_> {
    fn drop(&mut self) {
        self.pool.release(&self.blocks);
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence or stop token was generated.
    Stop,
    /// `max_tokens` were generated (or max_seq_len was reached).
    Length,
    /// The client cancelled the request.
    Cancelled,
}

/// The result of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Logits after the prompt (the first generated token's distribution).
    pub prompt_logits: Vec<f32>,
}

/// Generates from `prompt` with one sequence; `on_token` sees each token as it is chosen.
pub fn generate(
    engine: &mut dyn ModelRunner,
    pool: &mut BlockPool,
    prompt: &[u32],
    params: &SamplingParams,
    eos: &[u32],
    mut on_token: impl FnMut(u32),
) -> Result<Generation, RuntimeError> {
    let mut sampler = Sampler::new(params.seed);
    let mut seq = SequenceRunner::new(engine, pool);
    let prompt_logits = seq.feed(prompt)?;
    let mut logits = prompt_logits.clone();
    let mut tokens = Vec::new();
    loop {
        let token = sampler.sample(&logits, params);
        tokens.push(token);
        on_token(token);
        let stop = (!params.ignore_eos && eos.contains(&token)) || params.stop_token_ids.contains(&token);
        if stop {
            return Ok(Generation { tokens, finish_reason: FinishReason::Stop, prompt_logits });
        }
        if tokens.len() >= params.max_tokens {
            return Ok(Generation { tokens, finish_reason: FinishReason::Length, prompt_logits });
        }
        logits = seq.feed(&[token])?;
    }
}
