//! A pool of KV cache block ids: sequences take blocks as they grow and give them back.

/// No free block was left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KV cache is full: {wanted} blocks wanted, {free} free of {total}")]
pub struct KvCacheFull {
    pub wanted: usize,
    pub free: usize,
    pub total: usize,
}

/// Free-list of block ids `0..total`.
#[derive(Debug, Clone)]
pub struct BlockPool {
    free: Vec<u32>,
    total: usize,
}

impl BlockPool {
    pub fn new(total: usize) -> BlockPool {
        BlockPool { free: (0..total as u32).rev().collect(), total }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes `n` blocks, all or none.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<u32>, KvCacheFull> {
        if n > self.free.len() {
            return Err(KvCacheFull { wanted: n, free: self.free.len(), total: self.total });
        }
        let at = self.free.len() - n;
        let mut taken = self.free.split_off(at);
        taken.reverse();
        Ok(taken)
    }

    pub fn release(&mut self, blocks: &[u32]) {
        self.free.extend(blocks.iter().rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        let mut p = BlockPool::new(4);
        let a = p.allocate(3).unwrap();
        assert_eq!(a, vec![0, 1, 2]);
        let e = p.allocate(2).unwrap_err();
        assert_eq!((e.wanted, e.free), (2, 1));
        p.release(&a);
        assert_eq!(p.free_count(), 4);
    }
}
