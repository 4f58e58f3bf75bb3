//! `KvCacheManager`: per-sequence block tables over the block pool — prefix reuse when a
//! sequence is added, growth and copy-on-write before a step writes, registration of newly
//! filled blocks, forks that share blocks, and release.

use super::pool::{chain_hash, BlockKey, BlockPool};
use super::{KvCacheConfig, KvCacheError, KvCacheStats};
use std::collections::HashMap;

/// A sequence's id in the cache (the executor's sequence id).
pub type SeqId = u64;

#[derive(Clone, Debug, Default)]
struct SeqBlocks {
    blocks: Vec<u32>,
    /// Chained hashes of the sequence's full, computed blocks (a prefix of `blocks`).
    hashes: Vec<u64>,
}

/// Block tables of the running sequences over a shared, ref-counted pool.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    tokens_per_block: usize,
    enable_block_reuse: bool,
    seqs: HashMap<SeqId, SeqBlocks>,
    reused: u64,
    missed: u64,
}

/// What a prompt would find in the cache.
struct PrefixMatch {
    blocks: Vec<u32>,
    hashes: Vec<u64>,
    /// Full blocks that were eligible for lookup.
    eligible: usize,
}

impl KvCacheManager {
    /// A pool of `engine_blocks` blocks (capped by `config.max_tokens`) of `tokens_per_block`.
    pub fn new(config: &KvCacheConfig, engine_blocks: usize, tokens_per_block: usize) -> KvCacheManager {
        let tokens_per_block = tokens_per_block.max(1);
        let total = match config.max_tokens {
            Some(t) => engine_blocks.min(t / tokens_per_block),
            None => engine_blocks,
        };
        KvCacheManager {
            pool: BlockPool::new(total),
            tokens_per_block,
            enable_block_reuse: config.enable_block_reuse,
            seqs: HashMap::new(),
            reused: 0,
            missed: 0,
        }
    }

    pub fn tokens_per_block(&self) -> usize {
        self.tokens_per_block
    }

    pub fn total_blocks(&self) -> usize {
        self.pool.total()
    }

    /// Blocks an allocation can take now (free plus evictable cached ones).
    pub fn available_blocks(&self) -> usize {
        self.pool.available()
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.tokens_per_block)
    }

    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// The block table of `id` (empty if unknown).
    pub fn block_table(&self, id: SeqId) -> &[u32] {
        self.seqs.get(&id).map(|s| s.blocks.as_slice()).unwrap_or(&[])
    }

    /// The cached blocks a prompt of `tokens` can start from, covering at most `max_reuse`
    /// tokens (a request that wants the logits of later positions must compute them).
    fn match_prefix(&self, tokens: &[u32], max_reuse: usize) -> PrefixMatch {
        let bs = self.tokens_per_block;
        // The block holding the last token is never reused: it must be computed for logits.
        let eligible = if self.enable_block_reuse { tokens.len().saturating_sub(1).min(max_reuse) / bs } else { 0 };
        let (mut blocks, mut hashes, mut parent) = (Vec::new(), Vec::new(), 0u64);
        for chunk in tokens.chunks_exact(bs).take(eligible) {
            let hash = chain_hash(parent, chunk);
            match self.pool.lookup(hash, parent, chunk) {
                Some(b) => {
                    blocks.push(b);
                    hashes.push(hash);
                    parent = hash;
                }
                None => break,
            }
        }
        PrefixMatch { blocks, hashes, eligible }
    }

    /// Blocks that adding a sequence of `tokens` would take from the available ones
    /// (reused blocks still referenced elsewhere cost nothing).
    pub fn admission_cost(&self, tokens: &[u32]) -> usize {
        self.admission_cost_reusing(tokens, usize::MAX)
    }

    /// [`KvCacheManager::admission_cost`] when at most `max_reuse` leading tokens may come
    /// from the cache.
    pub fn admission_cost_reusing(&self, tokens: &[u32], max_reuse: usize) -> usize {
        let m = self.match_prefix(tokens, max_reuse);
        let shared = m.blocks.iter().filter(|&&b| !self.pool.is_cached_free(b)).count();
        self.blocks_for(tokens.len()) - shared
    }

    /// Adds sequence `id` holding `tokens`: reuses cached prefix blocks, allocates the rest.
    /// Returns how many leading tokens are already in the cache. All or nothing.
    pub fn add_sequence(&mut self, id: SeqId, tokens: &[u32]) -> Result<usize, KvCacheError> {
        self.add_sequence_reusing(id, tokens, usize::MAX)
    }

    /// [`KvCacheManager::add_sequence`] reusing at most `max_reuse` leading tokens from the
    /// cache (the rest is computed: a request scoring its prompt needs their logits).
    pub fn add_sequence_reusing(&mut self, id: SeqId, tokens: &[u32], max_reuse: usize) -> Result<usize, KvCacheError> {
        if self.seqs.contains_key(&id) {
            return Err(KvCacheError::DuplicateSequence(id));
        }
        let cost = self.admission_cost_reusing(tokens, max_reuse);
        if cost > self.pool.available() {
            return Err(self.full(cost));
        }
        let m = self.match_prefix(tokens, max_reuse);
        for &b in &m.blocks {
            self.pool.incref(b);
        }
        self.reused += m.blocks.len() as u64;
        self.missed += (m.eligible - m.blocks.len()) as u64;
        let reused_tokens = m.blocks.len() * self.tokens_per_block;
        let mut seq = SeqBlocks { blocks: m.blocks, hashes: m.hashes };
        self.grow(&mut seq, tokens.len());
        self.seqs.insert(id, seq);
        Ok(reused_tokens)
    }

    fn full(&self, wanted: usize) -> KvCacheError {
        KvCacheError::Full { wanted, available: self.pool.available(), total: self.pool.total() }
    }

    /// Allocates blocks until `seq` covers `len` tokens (the caller checked availability).
    fn grow(&mut self, seq: &mut SeqBlocks, len: usize) {
        while seq.blocks.len() < self.blocks_for(len) {
            match self.pool.allocate() {
                Some(b) => seq.blocks.push(b),
                None => break,
            }
        }
    }

    /// New blocks sequence `id` needs before writing tokens `from..to`: growth, plus one copy
    /// if the block at `from` is shared with another sequence.
    pub fn blocks_needed(&self, id: SeqId, from: usize, to: usize) -> usize {
        let Some(seq) = self.seqs.get(&id) else { return 0 };
        let grow = self.blocks_for(to).saturating_sub(seq.blocks.len());
        let cow = seq.blocks.get(from / self.tokens_per_block).is_some_and(|&b| self.pool.refs(b) > 1);
        grow + usize::from(cow && from < to)
    }

    /// Makes tokens `from..to` of `id` writable: copies a shared block (returned as
    /// `(src, dst)` for the engine to copy) and grows the table. All or nothing.
    pub fn prepare_write(&mut self, id: SeqId, from: usize, to: usize) -> Result<Option<(u32, u32)>, KvCacheError> {
        let need = self.blocks_needed(id, from, to);
        if need > self.pool.available() {
            return Err(self.full(need));
        }
        let mut seq = self.seqs.remove(&id).ok_or(KvCacheError::UnknownSequence(id))?;
        let mut copy = None;
        let at = from / self.tokens_per_block;
        if from < to {
            if let Some(&src) = seq.blocks.get(at).filter(|&&b| self.pool.refs(b) > 1) {
                if let Some(dst) = self.pool.allocate() {
                    self.pool.decref(src);
                    seq.blocks[at] = dst;
                    copy = Some((src, dst));
                }
            }
        }
        self.grow(&mut seq, to);
        self.seqs.insert(id, seq);
        Ok(copy)
    }

    /// Records that the first `computed` of `tokens` are in the cache: newly full blocks get
    /// their chained hash and become reusable.
    pub fn commit(&mut self, id: SeqId, tokens: &[u32], computed: usize) {
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        let bs = self.tokens_per_block;
        let full = computed.min(tokens.len()) / bs;
        while seq.hashes.len() < full.min(seq.blocks.len()) {
            let i = seq.hashes.len();
            let parent = if i == 0 { 0 } else { seq.hashes[i - 1] };
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let hash = chain_hash(parent, chunk);
            if self.enable_block_reuse {
                self.pool.register(seq.blocks[i], BlockKey { hash, parent, tokens: chunk.to_vec() });
            }
            seq.hashes.push(hash);
        }
    }

    /// Starts `child` sharing every block of `parent` (the shared partial block is copied on
    /// the first write, see [`prepare_write`](Self::prepare_write)).
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<(), KvCacheError> {
        if self.seqs.contains_key(&child) {
            return Err(KvCacheError::DuplicateSequence(child));
        }
        let seq = self.seqs.get(&parent).ok_or(KvCacheError::UnknownSequence(parent))?.clone();
        for &b in &seq.blocks {
            self.pool.incref(b);
        }
        self.seqs.insert(child, seq);
        Ok(())
    }

    /// Releases `id`'s blocks (last block first, so leaves are evicted before their parents).
    pub fn free_sequence(&mut self, id: SeqId) {
        if let Some(seq) = self.seqs.remove(&id) {
            for &b in seq.blocks.iter().rev() {
                self.pool.decref(b);
            }
        }
    }

    pub fn stats(&self) -> KvCacheStats {
        let total = self.pool.total();
        KvCacheStats {
            tokens_per_block: self.tokens_per_block,
            total_blocks: total,
            used_blocks: total - self.pool.available(),
            free_blocks: self.pool.free_count(),
            cached_blocks: self.pool.cached_count(),
            reused_blocks: self.reused,
            missed_blocks: self.missed,
            evicted_blocks: self.pool.evicted,
        }
    }
}
