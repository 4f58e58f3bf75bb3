//! Unit tests of the KV cache manager: hash chains, reuse, LRU eviction, ref counts, forks.

use super::*;

fn mgr(blocks: usize, reuse: bool) -> KvCacheManager {
    KvCacheManager::new(&KvCacheConfig { max_tokens: None, enable_block_reuse: reuse }, blocks, 4)
}

fn toks(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| i * 7 + salt).collect()
}

#[test]
fn prefix_blocks_are_reused_but_never_the_last_tokens_block() {
    let mut kv = mgr(16, true);
    let a = toks(10, 1);
    assert_eq!(kv.add_sequence(1, &a).unwrap(), 0);
    assert_eq!(kv.block_table(1).len(), 3);
    kv.commit(1, &a, 10);
    // Same 8-token prefix: two full blocks reused, the rest computed.
    let mut b = a[..8].to_vec();
    b.extend([500, 501]);
    assert_eq!(kv.add_sequence(2, &b).unwrap(), 8);
    assert_eq!(kv.block_table(2)[..2], kv.block_table(1)[..2]);
    assert_ne!(kv.block_table(2)[2], kv.block_table(1)[2]);
    // Exactly 8 tokens: the second block holds the last token, so only one is reused.
    assert_eq!(kv.add_sequence(3, &a[..8]).unwrap(), 4);
    let s = kv.stats();
    assert_eq!((s.reused_blocks, s.missed_blocks), (3, 2));
    assert!((s.hit_rate() - 0.6).abs() < 1e-9);
}

#[test]
fn hash_chain_depends_on_the_parent() {
    let mut kv = mgr(16, true);
    let a = toks(12, 1);
    kv.add_sequence(1, &a).unwrap();
    kv.commit(1, &a, 12);
    // Second block's tokens equal, first block differs: nothing reusable.
    let mut b = a.clone();
    b[0] = 999;
    assert_eq!(kv.add_sequence(2, &b).unwrap(), 0);
}

#[test]
fn freed_blocks_stay_cached_and_are_evicted_lru_leaf_first() {
    let mut kv = mgr(4, true);
    let a = toks(9, 1);
    kv.add_sequence(1, &a).unwrap();
    kv.commit(1, &a, 9);
    kv.free_sequence(1);
    let s = kv.stats();
    assert_eq!((s.used_blocks, s.cached_blocks, s.free_blocks), (0, 2, 2));
    // Three new blocks: two free ones, then the leaf (second) cached block is evicted.
    kv.add_sequence(2, &toks(12, 50)).unwrap();
    assert_eq!(kv.stats().evicted_blocks, 1);
    kv.free_sequence(2);
    // The first block of `a` survived and is still found.
    assert_eq!(kv.add_sequence(3, &a).unwrap(), 4);
    assert_eq!(kv.stats().reused_blocks, 1);
}

#[test]
fn reuse_disabled_finds_nothing_and_frees_everything() {
    let mut kv = mgr(8, false);
    let a = toks(9, 1);
    kv.add_sequence(1, &a).unwrap();
    kv.commit(1, &a, 9);
    kv.free_sequence(1);
    assert_eq!(kv.stats().free_blocks, 8);
    assert_eq!(kv.add_sequence(2, &a).unwrap(), 0);
    assert_eq!(kv.stats().reused_blocks + kv.stats().missed_blocks, 0);
}

#[test]
fn allocation_is_all_or_nothing() {
    let mut kv = mgr(3, true);
    kv.add_sequence(1, &toks(8, 1)).unwrap();
    let err = kv.add_sequence(2, &toks(8, 2)).unwrap_err();
    assert_eq!(err, KvCacheError::Full { wanted: 2, available: 1, total: 3 });
    assert!(!kv.contains(2));
    assert_eq!(kv.available_blocks(), 1);
    assert_eq!(kv.blocks_needed(1, 8, 9), 1);
    kv.prepare_write(1, 8, 9).unwrap();
    assert_eq!(kv.available_blocks(), 0);
    assert!(matches!(kv.prepare_write(1, 9, 13), Err(KvCacheError::Full { .. })));
}

#[test]
fn fork_shares_blocks_and_copies_the_partial_one_on_write() {
    let mut kv = mgr(8, true);
    let a = toks(6, 1);
    kv.add_sequence(1, &a).unwrap();
    kv.commit(1, &a, 6);
    kv.fork(1, 2).unwrap();
    kv.fork(1, 3).unwrap();
    assert_eq!(kv.block_table(2), kv.block_table(1));
    assert_eq!(kv.stats().used_blocks, 2);
    // Writing position 6 (block 1, shared three ways) copies for the first two writers.
    assert_eq!(kv.blocks_needed(1, 6, 7), 1);
    let (src, dst) = kv.prepare_write(1, 6, 7).unwrap().expect("copy");
    assert_eq!(src, kv.block_table(2)[1]);
    assert_eq!(dst, kv.block_table(1)[1]);
    assert!(kv.prepare_write(2, 6, 7).unwrap().is_some());
    assert_eq!(kv.prepare_write(3, 6, 7).unwrap(), None, "the last holder writes in place");
    assert_eq!(kv.block_table(1)[0], kv.block_table(3)[0], "full blocks stay shared");
    assert_eq!(kv.stats().used_blocks, 4);
    for id in [1, 2, 3] {
        kv.free_sequence(id);
    }
    assert_eq!(kv.stats().used_blocks, 0);
    assert_eq!(kv.available_blocks(), 8);
}

#[test]
fn admission_cost_counts_only_blocks_taken_from_the_available_pool() {
    let mut kv = mgr(8, true);
    let a = toks(9, 1);
    kv.add_sequence(1, &a).unwrap();
    kv.commit(1, &a, 9);
    // Two full blocks in use by sequence 1: shared for free; one new block.
    assert_eq!(kv.admission_cost(&a), 1);
    kv.free_sequence(1);
    // Now cached: reusing takes them out of the evictable pool, so they count.
    assert_eq!(kv.admission_cost(&a), 3);
}

#[test]
fn max_tokens_caps_the_pool() {
    let kv = KvCacheManager::new(&KvCacheConfig { max_tokens: Some(10), enable_block_reuse: true }, 100, 4);
    assert_eq!(kv.total_blocks(), 2);
}
