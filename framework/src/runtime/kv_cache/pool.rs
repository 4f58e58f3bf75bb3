//! The block pool: reference counts, the free list, and the cached (hash-keyed, unreferenced)
//! blocks ordered by last use for LRU eviction.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// What a full, reusable block holds: its chained hash, its parent's hash and its tokens
/// (kept to rule out hash collisions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BlockKey {
    pub hash: u64,
    pub parent: u64,
    pub tokens: Vec<u32>,
}

/// Hash of a block's tokens chained onto its parent's hash (0 for the first block).
pub(super) fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Blocks `0..total`: each is referenced (ref > 0), cached (ref 0, registered) or free.
#[derive(Debug)]
pub(super) struct BlockPool {
    refs: Vec<u32>,
    keys: Vec<Option<BlockKey>>,
    /// When each cached block entered the LRU (its key in `lru`).
    lru_tick: Vec<u64>,
    by_hash: HashMap<u64, u32>,
    free: Vec<u32>,
    lru: BTreeMap<u64, u32>,
    tick: u64,
    pub evicted: u64,
}

impl BlockPool {
    pub fn new(total: usize) -> BlockPool {
        BlockPool {
            refs: vec![0; total],
            keys: vec![None; total],
            lru_tick: vec![0; total],
            by_hash: HashMap::new(),
            free: (0..total as u32).rev().collect(),
            lru: BTreeMap::new(),
            tick: 0,
            evicted: 0,
        }
    }

    pub fn total(&self) -> usize {
        self.refs.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn cached_count(&self) -> usize {
        self.lru.len()
    }

    /// Blocks an allocation can take (free ones, then cached ones by eviction).
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    pub fn refs(&self, block: u32) -> u32 {
        self.refs[block as usize]
    }

    pub fn is_cached_free(&self, block: u32) -> bool {
        self.refs[block as usize] == 0 && self.keys[block as usize].is_some()
    }

    /// Takes a block: a free one, else the least recently used cached one (forgetting it).
    pub fn allocate(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.lru.pop_first()?;
                self.unregister(b);
                self.evicted += 1;
                b
            }
        };
        self.refs[block as usize] = 1;
        Some(block)
    }

    pub fn incref(&mut self, block: u32) {
        let i = block as usize;
        if self.refs[i] == 0 && self.keys[i].is_some() {
            self.lru.remove(&self.lru_tick[i]);
        }
        self.refs[i] += 1;
    }

    /// Drops one reference; an unreferenced block becomes cached (if registered) or free.
    /// Releasing an unreferenced (or unknown) block is a caller bug: it is logged and ignored,
    /// never pushed on the free list again (that would hand one block to two sequences).
    pub fn decref(&mut self, block: u32) {
        let i = block as usize;
        match self.refs.get(i) {
            Some(0) => {
                tracing::error!(block, "KV block released more often than taken; ignoring the release");
                return;
            }
            None => {
                tracing::error!(block, total = self.refs.len(), "release of a KV block outside the pool; ignoring it");
                return;
            }
            Some(_) => {}
        }
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            if self.keys[i].is_some() {
                self.tick += 1;
                self.lru_tick[i] = self.tick;
                self.lru.insert(self.tick, block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// Makes `block` findable by its key; false if another block already holds that key.
    pub fn register(&mut self, block: u32, key: BlockKey) -> bool {
        if self.keys[block as usize].is_some() || self.by_hash.contains_key(&key.hash) {
            return false;
        }
        self.by_hash.insert(key.hash, block);
        self.keys[block as usize] = Some(key);
        true
    }

    fn unregister(&mut self, block: u32) {
        if let Some(key) = self.keys[block as usize].take() {
            self.by_hash.remove(&key.hash);
        }
    }

    /// The block holding exactly `tokens` after the prefix hashed `parent`, if any.
    pub fn lookup(&self, hash: u64, parent: u64, tokens: &[u32]) -> Option<u32> {
        let &b = self.by_hash.get(&hash)?;
        let key = self.keys[b as usize].as_ref()?;
        (key.parent == parent && key.tokens == tokens).then_some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_double_release_never_frees_a_block_twice() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate().expect("a block");
        pool.decref(a);
        assert_eq!(pool.free_count(), 2);
        pool.decref(a); // the bug: released again
        pool.decref(7); // not a block of this pool
        assert_eq!(pool.free_count(), 2, "the block went on the free list twice");
        let x = pool.allocate().expect("first");
        let y = pool.allocate().expect("second");
        assert_ne!(x, y, "two allocations got the same block");
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn a_double_release_of_a_cached_block_keeps_one_lru_entry() {
        let mut pool = BlockPool::new(1);
        let a = pool.allocate().expect("a block");
        assert!(pool.register(a, BlockKey { hash: 1, parent: 0, tokens: vec![1, 2] }));
        pool.decref(a);
        pool.decref(a);
        assert_eq!(pool.cached_count(), 1);
        assert_eq!(pool.available(), 1);
    }
}
