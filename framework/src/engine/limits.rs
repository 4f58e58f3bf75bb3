//! The limits an engine is built for (TensorRT-LLM's names), the check that each is in range
//! (before anything is sized from them), the symbol values they give the graph's symbolic dims
//! (at the maximum, and for one step's batch), and the check that a batch fits them.

use super::batch::StepBatch;
use super::error::EngineError;
use super::plan::Symbols;
use rtllm_models::io;

/// Limits an engine is built for (TensorRT-LLM's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    pub max_seq_len: usize,
    pub tokens_per_block: usize,
    pub num_kv_blocks: usize,
}

/// The largest value a limit may take: the step inputs that carry token counts, positions and
/// block ids are 32-bit.
pub const MAX_LIMIT: usize = i32::MAX as usize;

impl EngineLimits {
    /// Each limit with the setting that sets it: the build config field (and plan.json's
    /// `limits` key) and the command-line flag.
    fn named(&self) -> [(&'static str, &'static str, usize); 5] {
        [
            ("max_batch_size", "--max-batch-size", self.max_batch_size),
            ("max_num_tokens", "--max-num-tokens", self.max_num_tokens),
            ("max_seq_len", "--max-seq-len", self.max_seq_len),
            ("tokens_per_block", "tokens_per_block", self.tokens_per_block),
            ("num_kv_blocks", "--num-kv-blocks", self.num_kv_blocks),
        ]
    }

    /// Checks every limit is between 1 and [`MAX_LIMIT`]; the message names the limit and its
    /// flag. What the limits add up to in memory is `budget`'s to check.
    pub fn check(&self) -> Result<(), String> {
        for (name, flag, value) in self.named() {
            if value == 0 || value > MAX_LIMIT {
                let flag = if flag.starts_with("--") { format!(" ({flag})") } else { String::new() };
                return Err(format!(
                    "{name}{flag} is {value}; it must be between 1 and {MAX_LIMIT} (step inputs are 32-bit)"
                ));
            }
        }
        Ok(())
    }

    pub fn max_blocks_per_seq(&self) -> usize {
        self.max_seq_len.div_ceil(self.tokens_per_block)
    }

    /// Every symbol at its largest (what memory is planned for).
    pub fn max_symbols(&self) -> Symbols {
        let mut s = Symbols::default();
        s.set(io::SYM_TOKENS, self.max_num_tokens);
        s.set(io::SYM_SEQS, self.max_batch_size);
        s.set(io::SYM_SEQS_PLUS_ONE, self.max_batch_size + 1);
        s.set(io::SYM_MAX_BLOCKS, self.max_blocks_per_seq());
        // The pools hold one scratch block past the ones the KV manager hands out.
        s.set(io::SYM_NUM_BLOCKS, self.num_kv_blocks + 1);
        s.set(io::SYM_BLOCK_SIZE, self.tokens_per_block);
        s.set(io::SYM_LOGITS, self.max_batch_size.max(1));
        s
    }

    /// The symbols of one step's batch.
    pub fn step_symbols(&self, b: &StepBatch) -> Symbols {
        let mut s = self.max_symbols();
        s.set(io::SYM_TOKENS, b.num_tokens());
        s.set(io::SYM_SEQS, b.num_seqs());
        s.set(io::SYM_SEQS_PLUS_ONE, b.num_seqs() + 1);
        s.set(io::SYM_MAX_BLOCKS, b.max_blocks);
        s.set(io::SYM_LOGITS, b.logits_indices.len());
        s
    }

    /// Checks that `b` is well formed and fits these limits.
    pub fn validate(&self, b: &StepBatch) -> Result<(), EngineError> {
        let (t, s, l) = (b.num_tokens(), b.num_seqs(), b.logits_indices.len());
        let bad = |m: String| Err(EngineError::Batch(m));
        if t == 0 || s == 0 {
            return bad("empty batch".into());
        }
        if t > self.max_num_tokens {
            return bad(format!("{t} tokens exceed max_num_tokens {}", self.max_num_tokens));
        }
        if s > self.max_batch_size || l > self.max_batch_size {
            return bad(format!("{s} sequences / {l} logits rows exceed max_batch_size {}", self.max_batch_size));
        }
        if b.positions.len() != t || b.query_start.len() != s + 1 || b.block_tables.len() != s * b.max_blocks {
            return bad("inconsistent packed lengths".into());
        }
        if b.max_blocks > self.max_blocks_per_seq() {
            return bad(format!("{} blocks per sequence exceed max_seq_len {}", b.max_blocks, self.max_seq_len));
        }
        if b.query_start[0] != 0 || b.query_start[s] as usize != t || b.query_start.windows(2).any(|w| w[1] < w[0]) {
            return bad("query_start must rise from 0 to the token count".into());
        }
        if let Some(&x) = b.block_tables.iter().find(|&&x| x < 0 || x as usize >= self.num_kv_blocks) {
            return bad(format!("block id {x} outside the pool of {}", self.num_kv_blocks));
        }
        for (i, &len) in b.seq_lens.iter().enumerate() {
            let q = b.query_start[i + 1] - b.query_start[i];
            if len < q || len as usize > self.max_seq_len || len as usize > b.max_blocks * self.tokens_per_block {
                return bad(format!(
                    "sequence {i}: length {len} with {q} new tokens does not fit its blocks / max_seq_len"
                ));
            }
        }
        if let Some(&x) = b.logits_indices.iter().find(|&&x| x < 0 || x as usize >= t) {
            return bad(format!("logits index {x} outside {t} tokens"));
        }
        Ok(())
    }
}
