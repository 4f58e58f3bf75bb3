//! The paged KV cache manager (TensorRT-LLM's `KVCacheManager`): a pool of fixed-size blocks
//! with reference counts, per-sequence block tables, prefix reuse keyed by chained block
//! hashes with LRU eviction of freed cached blocks, copy-on-write for forked sequences, and
//! the statistics the executor reports.

mod manager;
mod pool;
#[cfg(test)]
mod tests;

pub use manager::{KvCacheManager, SeqId};

/// How the KV cache is managed (TensorRT-LLM's `KvCacheConfig` names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Caps the pool at `max_tokens / tokens_per_block` blocks (default: the engine's whole pool).
    pub max_tokens: Option<usize>,
    /// Keep full blocks keyed by their token-prefix hash and reuse them for later requests.
    pub enable_block_reuse: bool,
}

impl Default for KvCacheConfig {
    fn default() -> Self {
        KvCacheConfig { max_tokens: None, enable_block_reuse: true }
    }
}

/// Counters and occupancy of the block pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvCacheStats {
    pub tokens_per_block: usize,
    pub total_blocks: usize,
    /// Blocks referenced by at least one sequence.
    pub used_blocks: usize,
    /// Blocks holding nothing reusable.
    pub free_blocks: usize,
    /// Unreferenced blocks kept for reuse (evicted LRU when space is needed).
    pub cached_blocks: usize,
    /// Prompt blocks found in the cache.
    pub reused_blocks: u64,
    /// Prompt blocks looked up and not found.
    pub missed_blocks: u64,
    /// Cached blocks evicted to make room.
    pub evicted_blocks: u64,
}

impl KvCacheStats {
    /// reused / (reused + missed); 0 when nothing was looked up.
    pub fn hit_rate(&self) -> f64 {
        let looked = self.reused_blocks + self.missed_blocks;
        if looked == 0 {
            0.0
        } else {
            self.reused_blocks as f64 / looked as f64
        }
    }
}

/// Not enough blocks for an allocation; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvCacheError {
    #[error("KV cache is full: {wanted} blocks wanted, {available} available of {total}")]
    Full { wanted: usize, available: usize, total: usize },
    #[error("sequence {0} is not in the KV cache")]
    UnknownSequence(SeqId),
    #[error("sequence {0} is already in the KV cache")]
    DuplicateSequence(SeqId),
}
